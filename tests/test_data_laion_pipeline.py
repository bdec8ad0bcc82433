"""The LAION-style pipeline end to end at test size: a webdataset of JPEGs -> SD-VAE latents, CLIP token ids,
DINOv2 features -> partition -> an expert and the router train on it -> generate decodes with the VAE."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch

from conftest import tiny_config
from tiny_encoders import laion_config, tiny_models, write_tar
from paris.config import from_yaml
from paris.data.prepare import prepare
from paris.partition import partition
from paris.run import RunDir
from paris.pipeline import ParisPipeline
from paris.sample import generate
from paris.train.expert import train_expert
from paris.train.router import train_router


def test_train_and_sample_from_a_laion_style_store(tmp_path):
    for i in range(3):
        write_tar(tmp_path / "tars" / f"{i:05d}.tar", 8 * i, 8)
    data = laion_config(tiny_models(), "webdataset", f"{tmp_path}/tars/{{00000..00002}}.tar").data
    config = dataclasses.replace(tiny_config(), data=data)
    run = RunDir(str(tmp_path / "run"))
    prepare(run, config)
    partition(run, 2, seed=0)
    summary = train_expert(run, config, 0)
    assert torch.isfinite(torch.tensor(summary["final_loss"]))
    train_expert(run, config, 1)
    train_router(run, config)
    images, _ = generate(ParisPipeline.from_run(run.url).mixture, ["picture number 3 of a thing"], "top2", steps=2, guidance=2.0)
    assert images.shape == (1, 3, 64, 64) and images.abs().max() <= 1  # decoded by the SD VAE


def test_the_readme_laion_config_is_a_valid_config():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("## Preparing a LAION-style data set"):]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    config = from_yaml(block, where="README")
    assert config.data.source == "webdataset" and config.data.autoencoder == "sd-vae"
    assert config.data.max_tokens == 77 and config.partition.fine_clusters == 1024
