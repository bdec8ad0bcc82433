"""torch.compile in training: auto's rule, a compiled job's bitwise resume with the choice kept, agreement with
eager steps, and the compiled code shared by the processes of a machine (paris.train.compiling)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from testkit.runs import copy_run, with_expert
from paris.config import TrainConfig, apply_overrides
from paris.errors import ParisError
from paris.train import compiling
from paris.train.expert import train_expert
from paris.train.metrics import read_metrics

CPU = torch.device("cpu")


def _sleeper(seconds: float):
    """A trial pass that takes `seconds`, and the list of the modules it was called with."""
    calls = []

    def trial(module):
        calls.append(module)
        time.sleep(seconds)
    return trial, calls


def test_auto_compiles_when_the_steps_repay_the_compile():
    """steps x eager seconds x 10% (CPU) against 60 s before any compile of the shape on this machine."""
    trial, calls = _sleeper(0.01)
    long = compiling.choose("auto", None, 100_000, CPU, trial, "model", "never-compiled")  # ~100 s saved
    short = compiling.choose("auto", None, 10_000, CPU, trial, "model", "never-compiled")  # ~10 s saved
    assert long.compiled and not short.compiled, (long, short)
    assert "60 s to compile" in short.why and calls == ["model"] * 4  # timed twice per estimate, eagerly


def test_auto_counts_a_compile_measured_on_this_machine():
    trial, _ = _sleeper(0.01)
    compiling._write_record("compiled-before", {"cold": 30.0})  # the cache now holds it: 12% of the cold compile
    assert compiling.compile_seconds("compiled-before") == (pytest.approx(3.6),
                                                            "12% of the first compile here, now cached")
    assert compiling.choose("auto", None, 10_000, CPU, trial, "model", "compiled-before").compiled  # ~10 s > 3.6 s
    compiling._write_record("compiled-before", {"cold": 30.0, "warm": 20.0})  # a timed warm compile wins
    assert not compiling.choose("auto", None, 10_000, CPU, trial, "model", "compiled-before").compiled


def test_the_choice_of_on_off_a_checkpoint_or_a_short_job_takes_no_timing():
    trial, calls = _sleeper(0.0)
    assert compiling.choose("on", None, 10, CPU, trial, None, "k").compiled
    assert not compiling.choose("off", None, 10**9, CPU, trial, None, "k").compiled
    assert compiling.choose("auto", True, 10, CPU, trial, None, "k").compiled  # as the job began
    assert not compiling.choose("auto", None, compiling.MIN_STEPS - 1, CPU, trial, None, "k").compiled
    assert not compiling.choose("on", True, 0, CPU, trial, None, "k").compiled  # nothing left to run
    assert not compiling.choose("auto", None, 10**9, torch.device("meta"), trial, None, "k").compiled
    assert calls == []


@pytest.mark.parametrize("value, mode", [("on", "on"), ("off", "off"), ("true", "on"), ("false", "off"),
                                         ("auto", "auto")])
def test_compile_takes_auto_on_off_and_yaml_booleans(config, value, mode):
    assert apply_overrides(config, [f"expert.compile={value}"]).expert.compile == mode
    assert TrainConfig().compile == "auto"


def test_a_bad_compile_mode_names_the_choices(config):
    with pytest.raises(ParisError, match="'expert.compile' must be one of auto, on, off; got 'sometimes'"):
        apply_overrides(config, ["expert.compile=sometimes"])


@pytest.mark.slow
def test_a_compiled_job_resumes_bitwise_keeping_its_choice(partitioned, tmp_path, config):
    """8 compiled steps == 4 compiled, then resumed under auto, which alone would not compile 4 steps: the
    checkpoint's record decides. The first step's loss and gradient norm, on one batch from the same weights,
    agree with an eager job's to 1e-5 (measured: equal loss, gradients 3e-6 apart relative to their norm)."""
    straight = copy_run(partitioned, tmp_path / "a")
    train_expert(straight, with_expert(config, steps=8, cooldown=0.25, compile="on", preset="nano"), 0)
    resumed = copy_run(partitioned, tmp_path / "b")
    train_expert(resumed, with_expert(config, steps=4, cooldown=0.25, compile="on", preset="nano"), 0)
    train_expert(resumed, with_expert(config, steps=8, cooldown=0.25, compile="auto", preset="nano"), 0)
    for step in (4, 8):
        assert resumed.read_json(f"experts/0/ckpt/{step:08d}/state.json")["compiled"] is True
    for rel in ("ckpt/00000008/model.safetensors", "ckpt/00000008/ema.safetensors",
                "ckpt/00000008/optimizer.safetensors", "final/diffusion_pytorch_model.safetensors"):
        a, b = straight.load_tensors(f"experts/0/{rel}"), resumed.load_tensors(f"experts/0/{rel}")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), rel

    eager = copy_run(partitioned, tmp_path / "c")
    train_expert(eager, with_expert(config, steps=8, cooldown=0.25, compile="off", preset="nano"), 0)
    assert eager.read_json("experts/0/ckpt/00000008/state.json")["compiled"] is False
    (first_compiled, *_), (first_eager, *_) = read_metrics(straight, "experts/0"), read_metrics(eager, "experts/0")
    for key in ("loss", "grad_norm"):
        assert first_compiled[key] == pytest.approx(first_eager[key], rel=1e-5), key
    a, b = (run.load_tensors("experts/0/ckpt/00000008/model.safetensors") for run in (straight, eager))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # two codes, so not bitwise: why the choice is kept


@pytest.mark.slow
def test_the_processes_of_a_machine_share_compiled_code(partitioned, tmp_path):
    """Two expert processes one after the other, as paris launch starts them: the second loads the code the first
    compiled. (Both are processes of their own: a compile inside pytest's process, which has imported more
    libraries, is cached under other keys.)"""
    logs = []
    for name in ("first", "second"):
        run = copy_run(partitioned, tmp_path / name)
        done = subprocess.run([sys.executable, "-m", "paris", "train-expert", run.url, "--expert", "1",
                               "--set", "expert.steps=2", "--set", "expert.compile=on", "--set", "expert.preset=nano"],
                              capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        logs.append(done.stdout + done.stderr)
        assert done.returncode == 0, logs[-1][-2000:]
    assert "expert 1: compiling (compile: on)" in logs[1] and "s (from this machine's cache)" in logs[1], logs[1]
