"""Kill-and-resume trials: SIGKILL an expert's training at random moments, restart it until it finishes, and
check that its weights are bitwise identical to an uninterrupted run (CPU, tiny preset).

    .venv/bin/python benchmarks/resume_trials.py --trials 20

Prints one line per trial (kills, identical or not) and the total. tests/test_resume.py runs one trial.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from paris.data.prepare import prepare
from paris.demo import demo_config
from paris.clusters.partition import partition
from paris.config import PartitionConfig
from paris.run import RunDir

STEPS = ["--set", "expert.steps=150", "--set", "expert.checkpoint_every=10", "--set", "expert.log_every=5"]


def make_run(path: Path) -> RunDir:
    """A prepared, partitioned run of 300 Fashion-MNIST images with the tiny presets."""
    config = demo_config()
    config = dataclasses.replace(
        config, data=dataclasses.replace(config.data, limit=300),
        expert=dataclasses.replace(config.expert, batch_size=8, warmup_steps=10, threads=1))
    run = RunDir(str(path))
    prepare(run, config)
    partition(run, PartitionConfig(num_clusters=2, seed=0))
    return run


def train(run: RunDir) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "paris", "train-expert", run.url, "--expert", "0", *STEPS],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def state(run: RunDir) -> dict[str, torch.Tensor]:
    """The final EMA weights and the last checkpoint's raw weights and optimiser state, by name."""
    latest = run.read_json("experts/0/LATEST")["path"]
    tensors = {f"final.{k}": v for k, v in run.load_tensors("experts/0/final/diffusion_pytorch_model.safetensors").items()}
    for part in ("model", "optimizer"):
        tensors.update({f"{part}.{k}": v for k, v in run.load_tensors(f"experts/0/{latest}/{part}.safetensors").items()})
    return tensors


def straight(run: RunDir) -> dict[str, torch.Tensor]:
    process = train(run)
    assert process.wait() == 0, process.stderr.read().decode()
    return state(run)


def kill_and_resume(run: RunDir, kill_after: callable, max_kills: int = 6) -> int:
    """Restart training after SIGKILLs (at times chosen by `kill_after(run)`) until it completes; the kill count."""
    kills = 0
    while True:
        process = train(run)
        if kills < max_kills and kill_after(run, process):
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
            continue
        code = process.wait()
        if code != 0:
            raise RuntimeError(f"training failed after {kills} kills: {process.stderr.read().decode()[-2000:]}")
        return kills


def random_moment(rng: random.Random, low: float = 1.0, high: float = 8.0):
    """Kill at a uniformly random time after the start (start-up, mid-step, mid-checkpoint: anything)."""
    def kill_after(run: RunDir, process: subprocess.Popen) -> bool:
        deadline = time.monotonic() + rng.uniform(low, high)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            time.sleep(0.01)
        return process.poll() is None
    return kill_after


def identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        base = make_run(Path(tmp) / "base")
        reference = straight(RunDir(shutil.copytree(base.url, f"{tmp}/straight")))
        same = 0
        for trial in range(args.trials):
            run = RunDir(shutil.copytree(base.url, f"{tmp}/trial{trial}"))
            kills = kill_and_resume(run, random_moment(rng))
            ok = identical(state(run), reference)
            same += ok
            print(f"trial {trial + 1:2d}: {kills} kills, {'bitwise identical' if ok else 'DIFFERENT'}", flush=True)
            shutil.rmtree(run.url)
    print(f"{same} of {args.trials} kill-and-resume trials bitwise identical to the uninterrupted run")


if __name__ == "__main__":
    main()
