"""One expert, any hardware: torchrun with 2 gloo processes, gradient accumulation and a single process
follow the same optimisation for the same global batch (equal up to float summation order)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from testkit.runs import copy_run, run_cli
from paris.config import TrainConfig
from paris.errors import ParisError
from paris.train.loop import micro_batches

STEPS = ["--set", "expert.steps=4", "--set", "expert.batch_size=8", "--set", "expert.log_every=2"]


def final_weights(run) -> dict[str, torch.Tensor]:
    return run.load_tensors("experts/0/final/diffusion_pytorch_model.safetensors")


def assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.fixture(scope="module")
def single(partitioned, tmp_path_factory):
    run = copy_run(partitioned, tmp_path_factory.mktemp("single") / "run")
    result = run_cli("train-expert", run.url, "--expert", "0", *STEPS)
    assert result.returncode == 0, result.stderr
    assert run.exists("experts/0/loss.png")  # the command draws the job's loss curve
    return final_weights(run)


def test_two_gloo_processes_equal_one_process(partitioned, tmp_path, single):
    run = copy_run(partitioned, tmp_path / "run")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-port=29517",
         "-m", "paris", "train-expert", run.url, "--expert", "0", *STEPS],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert_close(final_weights(run), single)
    # Only rank 0 writes: one metrics chunk with each logged step once.
    records = [json.loads(line) for line in run.read_text("experts/0/metrics/00000004.jsonl").splitlines()]
    assert [r["step"] for r in records] == [2, 4]


def test_gradient_accumulation_equals_one_big_batch(partitioned, tmp_path, single):
    run = copy_run(partitioned, tmp_path / "run")
    result = run_cli("train-expert", run.url, "--expert", "0", *STEPS, "--set", "expert.micro_batch_size=2")
    assert result.returncode == 0, result.stderr
    assert_close(final_weights(run), single)


def test_micro_batches_are_derived_from_the_global_batch():
    assert micro_batches(TrainConfig(batch_size=256), world_size=8) == (32, 1)
    assert micro_batches(TrainConfig(batch_size=256, micro_batch_size=8), world_size=8) == (8, 4)
    assert micro_batches(TrainConfig(batch_size=256, micro_batch_size=64), world_size=1) == (64, 4)
    with pytest.raises(ParisError, match="does not divide"):
        micro_batches(TrainConfig(batch_size=256, micro_batch_size=24), world_size=1)
    with pytest.raises(ParisError, match="does not split over 3"):
        micro_batches(TrainConfig(batch_size=256), world_size=3)

