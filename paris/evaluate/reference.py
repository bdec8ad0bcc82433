"""The held-out real images an evaluation compares against, and their captions, which become the prompts.

Any data source can serve (`--reference PATH_OR_URL`, read as `--reference-source`, by default the run's own
kind); each image is preprocessed as `paris prepare` does it, and the broken or caption-less ones are skipped.
A Fashion-MNIST run needs no reference: its default is the test split, which the training never saw.
"""

from __future__ import annotations

import dataclasses

import torch

from paris.config import RunConfig
from paris.data import fashion_mnist
from paris.data.preprocess import Skip, load_image
from paris.data.sources import SOURCES, open_source
from paris.errors import ParisError


@dataclasses.dataclass
class Reference:
    images: torch.Tensor  # [N, C, H, W] in [-1, 1]
    prompts: list[str]
    labels: torch.Tensor | None  # Fashion-MNIST classes [N]; None for data without them
    where: str  # for the report: "fashion-mnist PATH (test split)", "folder PATH"


def load_reference(config: RunConfig, num_samples: int, path: str = "", source: str = "") -> Reference:
    """The first `num_samples` usable images of the reference and their prompts."""
    if source and not path:
        raise ParisError(f"--reference-source {source} needs --reference PATH_OR_URL, the data set to read it from")
    if not path and config.data.source != "fashion-mnist":
        raise ParisError(f"evaluating a {config.data.source} run needs held-out real images with captions: pass "
                         f"--reference PATH_OR_URL (images the run did not train on; read as --reference-source, "
                         f"default {config.data.source})")
    source, path = source or config.data.source, path or config.data.path
    if source not in SOURCES:
        raise ParisError(f"unknown --reference-source {source!r}; choose one of {', '.join(SOURCES)}")
    # Held out: the test split of Fashion-MNIST and of a Hugging Face DatasetDict; all images, not data.limit.
    cfg = dataclasses.replace(config.data, source=source, path=path, split="test", limit=0)
    images, prompts, labels = [], [], []
    for sample in open_source(cfg).samples():
        if len(images) == num_samples:
            break
        if sample.caption is None:
            continue
        try:
            images.append(load_image(sample.image, cfg.image_size, cfg.min_image_size))
        except Skip:
            continue
        # Fashion-MNIST is asked for a class with the sampling prompt, as the demo does; others by caption.
        prompts.append(fashion_mnist.class_prompt(sample.label) if source == "fashion-mnist" else sample.caption)
        labels.append(sample.label)
    if len(images) < 2:
        raise ParisError(f"the reference {path} ({source}) gave {len(images)} usable images (decodable, at least "
                         f"data.min_image_size={cfg.min_image_size} px, with a caption); FID needs at least 2")
    where = f"{source} {path}" + (" (test split)" if source == "fashion-mnist" else "")
    return Reference(torch.stack(images), prompts, torch.tensor(labels) if source == "fashion-mnist" else None, where)
