"""Shared fixtures: one tiny prepared run (real Fashion-MNIST, real MiniLM) built once per session.

Every config here is tiny so the whole suite runs in a few minutes on 2 CPU cores. Tests that change a
run work on a copy (`copy_run`), never on the session runs themselves.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no model hub here: a failed download would retry for 25-50 s
os.environ["PARIS_CACHE"] = tempfile.mkdtemp(prefix="paris-cache-")  # the tests never touch the user's cache

import pytest  # noqa: E402
import torch  # noqa: E402

from paris.config import BaselineConfig, PartitionConfig, RunConfig  # noqa: E402
from paris.demo import demo_config  # noqa: E402
from paris.run import RunDir  # noqa: E402

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
NUM_IMAGES = 300
SHARD_SIZE = 128  # 300 images -> 3 shards (128, 128, 44): exercises the multi-shard path


def tiny_config(**expert) -> RunConfig:
    """The demo config cut down to seconds: 300 images, K=2, a few steps of the tiny presets, 1 thread."""
    cfg = demo_config(FASHION_MNIST)
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, limit=NUM_IMAGES, shard_size=SHARD_SIZE),
        partition=dataclasses.replace(cfg.partition, num_clusters=2),
        expert=dataclasses.replace(cfg.expert, steps=6, batch_size=8, warmup_steps=0, checkpoint_every=1000,
                                   log_every=1, threads=1, **expert),
        router=dataclasses.replace(cfg.router, steps=10, batch_size=16, warmup_steps=0, checkpoint_every=1000,
                                   log_every=5, threads=1, val_fraction=0.1),
        sample=dataclasses.replace(cfg.sample, steps=4),
        baseline=BaselineConfig(),  # the protocol's own batch
    )


def with_expert(cfg: RunConfig, **changes) -> RunConfig:
    return dataclasses.replace(cfg, expert=dataclasses.replace(cfg.expert, **changes))


def copy_run(src: Path, dst: Path) -> RunDir:
    shutil.copytree(src, dst)
    return RunDir(str(dst))


def record_writes(run: RunDir) -> list[str]:
    """Spy on a RunDir: returns a list that fills with the run-relative paths it writes, in order.

    The real write still happens; this only observes the order (e.g. "manifest last").
    """
    writes: list[str] = []
    real_write = run.write_bytes

    def write_bytes(rel: str, data: bytes) -> None:
        real_write(rel, data)
        writes.append(rel)

    run.write_bytes = write_bytes
    return writes


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative path -> content), to see what a command wrote or changed."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def randomize_zero_params(model: torch.nn.Module, seed: int, std: float = 0.2) -> torch.nn.Module:
    """Give every all-zero parameter (zero-initialised gates, projections, biases) random values.

    The models start with zeroed output projections, which hides whether an input is used at all.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """`python -m paris ARGS` in a subprocess, offline, as a user would run it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "paris", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="session")
def config() -> RunConfig:
    return tiny_config()


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, config):
    """A prepared run (data/ + config.yaml) and the order in which prepare wrote its files."""
    from paris.data.prepare import prepare

    path = tmp_path_factory.mktemp("prepared") / "run"
    run = RunDir(str(path))
    writes = record_writes(run)
    manifest = prepare(run, config)
    return {"path": path, "manifest": manifest, "writes": list(writes)}


@pytest.fixture(scope="session")
def partitioned(tmp_path_factory, prepared, config) -> Path:
    """A copy of the prepared run, partitioned into K=2 clusters."""
    from paris.clusters.partition import partition

    run = copy_run(prepared["path"], tmp_path_factory.mktemp("partitioned") / "run")
    partition(run, config.partition)
    return Path(run.url)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, partitioned, config) -> Path:
    """A copy of the partitioned run with both experts (6 steps each) and the router (10 steps) trained."""
    from paris.train.expert import train_expert
    from paris.train.router import train_router

    run = copy_run(partitioned, tmp_path_factory.mktemp("trained") / "run")
    for k in range(config.partition.num_clusters):
        train_expert(run, config, k)
    train_router(run, config)
    return Path(run.url)


@pytest.fixture(scope="session")
def text_encoder(config):
    """The real MiniLM text encoder, loaded once."""
    from paris.models.encoders import build_text_encoder

    return build_text_encoder(config.data.text_encoder, config.data.text_encoder_path, config.data.max_tokens)


@pytest.fixture(scope="session")
def laion_trained(tmp_path_factory) -> dict:
    """Paris's pipeline at test size: 3 webdataset tars of 8 JPEGs -> SD-VAE latents, CLIP token ids, DINOv2
    features (tiny random models) -> K=2 -> both experts and the router trained. The run's path, its config and
    the experts' training summaries."""
    from tiny_encoders import laion_config, tiny_models, write_tar

    from paris.data.prepare import prepare
    from paris.clusters.partition import partition
    from paris.train.expert import train_expert
    from paris.train.router import train_router

    root = tmp_path_factory.mktemp("laion")
    for i in range(3):
        write_tar(root / "tars" / f"{i:05d}.tar", 8 * i, 8)
    config = dataclasses.replace(tiny_config(), data=laion_config(tiny_models(), "webdataset",
                                                                  f"{root}/tars/{{00000..00002}}.tar").data)
    run = RunDir(str(root / "run"))
    prepare(run, config)
    partition(run, PartitionConfig(num_clusters=2, seed=0))
    summaries = [train_expert(run, config, k) for k in range(2)]
    train_router(run, config)
    return {"path": root / "run", "config": config, "summaries": summaries}
