"""The held-out real images an evaluation compares against, and their captions, which become the prompts.

Any data source can serve (`--reference PATH_OR_URL`, read as `--reference-source`, by default the run's own
kind); each image is preprocessed as `paris prepare` does it, and the broken or caption-less ones are skipped.
A run whose source has a held-out split (Fashion-MNIST) needs no reference: its default is that test split.
"""

from __future__ import annotations

import dataclasses

import torch

from paris.config import RunConfig
from paris.data.preprocess import Skip, load_image
from paris.data.sources import SOURCES, open_source
from paris.errors import ParisError


@dataclasses.dataclass
class Reference:
    images: torch.Tensor  # [N, C, H, W] in [-1, 1]
    prompts: list[str]
    labels: torch.Tensor | None  # classes [N] when the source's labels are classes (Fashion-MNIST); else None
    where: str  # for the report: "fashion-mnist PATH (test split)", "folder PATH"
    path: str  # the data set it was read from (with labels, its train split trains the adherence classifier)


def load_reference(config: RunConfig, num_samples: int, path: str | None = None, source: str | None = None) -> Reference:
    """The first `num_samples` usable images of the reference and their prompts."""
    if source and not path:
        raise ParisError(f"--reference-source {source} needs --reference PATH_OR_URL, the data set to read it from")
    if not path and not SOURCES[config.data.source].has_held_out_split:
        raise ParisError(f"evaluating a {config.data.source} run needs held-out real images with captions: pass "
                         f"--reference PATH_OR_URL (images the run did not train on; read as --reference-source, "
                         f"default {config.data.source})")
    source, path = source or config.data.source, path or config.data.path
    if source not in SOURCES:
        raise ParisError(f"unknown --reference-source {source!r}; choose one of {', '.join(SOURCES)}")
    # Held out: the test split of Fashion-MNIST and of a Hugging Face DatasetDict; all images, not data.limit.
    cfg = dataclasses.replace(config.data, source=source, path=path, split="test", limit=None)
    reader = open_source(cfg)
    images, prompts, labels = [], [], []
    for sample in reader.samples():
        if len(images) == num_samples:
            break
        if sample.caption is None:
            continue
        try:
            images.append(load_image(sample.image, cfg.image_size, cfg.min_image_size))
        except Skip:
            continue
        prompts.append(reader.prompt(sample))
        labels.append(sample.label)
    if len(images) < 2:
        raise ParisError(f"the reference {path} ({source}) gave {len(images)} usable images (decodable, at least "
                         f"data.min_image_size={cfg.min_image_size} px, with a caption); FID needs at least 2")
    where = f"{source} {path}" + (" (test split)" if reader.has_held_out_split else "")
    return Reference(torch.stack(images), prompts, torch.tensor(labels) if reader.class_names else None, where,
                     path)
