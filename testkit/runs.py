"""Tiny runs: the demo config cut down to seconds, copies and snapshots of run directories, and `paris` run as
a user runs it (a subprocess)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from paris.config import BaselineConfig, RunConfig
from paris.demo import demo_config
from paris.run import RunDir

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
NUM_IMAGES = 300
SHARD_SIZE = 128  # 300 images -> 3 shards (128, 128, 44): exercises the multi-shard path


def read_all(store):
    """Every sample of a paris.data.store.Store as one batch, latents as float32: for checking a small store
    against what was written (training never does this; it streams)."""
    batch = store.batch(torch.arange(len(store)))
    return dataclasses.replace(batch, latents=batch.latents.float())


def tiny_config(**expert) -> RunConfig:
    """The demo config cut down to seconds: 300 images, K=2, a few steps of the tiny presets, 1 thread, the lr
    the tests' thresholds were measured at; pixel-PCA features (SimCLR's minutes of training are tested on their
    own, tests/models/test_simclr.py) and the captions that name the class, which the tests' prompts ask for."""
    cfg = demo_config(FASHION_MNIST)
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, limit=NUM_IMAGES, shard_size=SHARD_SIZE, features="pixel-pca",
                                 captions="class"),
        partition=dataclasses.replace(cfg.partition, num_clusters=2),
        expert=dataclasses.replace(cfg.expert, steps=6, batch_size=8, lr=5e-4, warmup_steps=0, checkpoint_every=1000,
                                   log_every=1, threads=1, **expert),
        router=dataclasses.replace(cfg.router, steps=10, batch_size=16, warmup_steps=0, checkpoint_every=1000,
                                   log_every=5, threads=1, val_fraction=0.1, use_text=False),
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


def assert_user_error(result, *needles: str) -> str:
    """`paris` refused bad input as it should: exit 2, one `error: ...` line holding every needle, no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def run_paris(*args: str) -> tuple[int, str, str]:
    """`paris ARGS` through the console script's entry in this process, as fast as a function call:
    (exit code, stdout, stderr)."""
    from paris import progress
    from paris.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["paris", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0
    finally:
        sys.argv = argv
        progress.listen(None)
    return code, out.getvalue(), err.getvalue()


def run_in_process(*args: str) -> subprocess.CompletedProcess:
    """run_paris's result shaped as run_cli's, for the checks that take either (assert_user_error)."""
    code, out, err = run_paris(*args)
    return subprocess.CompletedProcess(["paris", *args], code, out, err)
