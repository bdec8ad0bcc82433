"""The LAION-style pipeline end to end at test size: a webdataset of JPEGs -> SD-VAE latents, CLIP token ids,
DINOv2 features -> partition -> both experts and the router train on it -> generate decodes with the VAE."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from paris.config import from_yaml
from paris.inference.pipeline import ParisPipeline
from paris.inference.sampler import generate


def test_train_and_sample_from_a_laion_style_store(laion_trained):
    assert all(torch.isfinite(torch.tensor(s["final_loss"])) for s in laion_trained["summaries"])
    pipe = ParisPipeline.from_run(str(laion_trained["path"]))
    images, _ = generate(pipe.mixture, ["picture number 3 of a thing"], pipe.sample.updated(strategy="top2", steps=2, guidance=2.0))
    assert images.shape == (1, 3, 64, 64) and images.abs().max() <= 1  # decoded by the SD VAE


def test_the_documented_laion_config_is_a_valid_config():
    section = (Path(__file__).parents[1] / "docs" / "data.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    config = from_yaml(block, where="docs/data.md")
    assert config.data.source == "webdataset" and config.data.autoencoder == "sd-vae"
    assert config.data.max_tokens == 77 and config.partition.fine_clusters == 1024
