"""Kill-and-resume: train expert 0 of a tiny run in a subprocess, SIGKILL it when asked, restart it until it
finishes, and compare its final weights and optimiser state with an uninterrupted run's."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from paris.clusters.partition import partition
from paris.config import PartitionConfig
from paris.data.prepare import prepare
from paris.demo import demo_config
from paris.run import RunDir

STEPS = ["--set", "expert.steps=150", "--set", "expert.checkpoint_every=10", "--set", "expert.log_every=5"]


def make_run(path: Path) -> RunDir:
    """A prepared, partitioned run of 300 Fashion-MNIST images with the tiny presets (pixel-PCA clusters: the
    demo's SimCLR features would cost minutes of training here and change nothing that resuming tests)."""
    config = demo_config()
    config = dataclasses.replace(
        config, data=dataclasses.replace(config.data, limit=300, features="pixel-pca"),
        expert=dataclasses.replace(config.expert, batch_size=8, warmup_steps=10, threads=1))
    run = RunDir(str(path))
    prepare(run, config)
    partition(run, PartitionConfig(num_clusters=2, seed=0))
    return run


def train(run: RunDir, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    """`paris train-expert RUN --expert 0` with STEPS and `extra` options (a LoRA's: --init-from, --lora)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "paris", "train-expert", run.url, "--expert", "0", *STEPS, *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def state(run: RunDir) -> dict[str, torch.Tensor]:
    """The final EMA weights (a LoRA's: its adapter) and the last checkpoint's raw weights and optimiser state."""
    latest = run.read_json("experts/0/LATEST")["path"]
    final = next(f"experts/0/final/{name}" for name in ("diffusion_pytorch_model.safetensors", "adapter_model.safetensors")
                 if run.exists(f"experts/0/final/{name}"))
    tensors = {f"final.{k}": v for k, v in run.load_tensors(final).items()}
    for part in ("model", "optimizer"):
        tensors.update({f"{part}.{k}": v for k, v in run.load_tensors(f"experts/0/{latest}/{part}.safetensors").items()})
    return tensors


def straight(run: RunDir, extra: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    process = train(run, extra)
    assert process.wait() == 0, process.stderr.read().decode()
    return state(run)


def kill_and_resume(run: RunDir, kill_after: callable, max_kills: int = 6, extra: tuple[str, ...] = ()) -> int:
    """Restart training after SIGKILLs (at times chosen by `kill_after(run)`) until it completes; the kill count."""
    kills = 0
    while True:
        process = train(run, extra)
        if kills < max_kills and kill_after(run, process):
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
            continue
        code = process.wait()
        if code != 0:
            raise RuntimeError(f"training failed after {kills} kills: {process.stderr.read().decode()[-2000:]}")
        return kills


def kill_at_step_40(run: RunDir, process) -> bool:
    """Kill as soon as the job has logged step 40 (after its first checkpoints, long before step 150)."""
    while process.poll() is None:
        if run.exists("experts/0/progress.json") and run.read_json("experts/0/progress.json")["step"] >= 40:
            return True
        time.sleep(0.01)
    return False


def identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
