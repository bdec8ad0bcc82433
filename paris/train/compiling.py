"""Whether a training job runs through torch.compile: decided once when the job starts, kept for its whole life.

torch.compile fuses the elementwise work between the matmuls (normalisation, modulation, GELU, residuals) into
a few kernels. What that saves is a share of each step, what it costs is paid once, before the first step:

    expert.compile: on     compile
                    off    run eagerly
                    auto   compile when   steps x eager step seconds x EXPECTED_SAVING[device]  >  compile seconds

The eager step is timed on the job's own first batch (a forward and backward whose gradients are thrown away);
the compile seconds are those the last compile of the same network and batch took on this machine, or
COLD_COMPILE_SECONDS before there was one. torch keeps compiled code in one cache per machine
($TORCHINDUCTOR_CACHE_DIR, by default /tmp/torchinductor_<user>), shared by every process: of K experts of one
shape trained on a machine, the first pays a cold compile and the others load its code in seconds. The times are
recorded in that same cache, so they are forgotten with the code they describe.

A resumed job keeps the choice its checkpoint records: compiled and eager steps agree only to float rounding, so
changing mid-run would break bitwise resume (paris.train.loop).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch._inductor.runtime.cache_dir_utils import cache_dir  # a light module: no compiler imported

# Share of an eager training step that compiling saves, measured with benchmarks/train_throughput.py: on a CPU
# 10% (tiny at batch 16, one thread per expert as paris launch and the demo run them: 1.11x); on an H200 34%
# (XL/2 in bf16 at batch 128: 0.66x the time). Other devices are never compiled by `auto`.
EXPECTED_SAVING = {"cpu": 0.10, "cuda": 0.34}
# A first compile of a model and batch on a machine: 35 s for tiny on one CPU thread, about a minute for XL/2 on a
# GPU (forward and backward). Once a job has compiled a shape, what it took is used instead; a compile that finds
# its code in the cache takes WARM_SHARE of a cold one until one has been timed (tiny on a CPU: 4.1 s for 34.7 s).
COLD_COMPILE_SECONDS = 60.0
WARM_SHARE = 0.12
# Under auto, jobs shorter than this never compile (nor spend two steps timing themselves): no compile of the
# measured models repays itself within 100 steps.
MIN_STEPS = 100

Trial = Callable[[nn.Module], None]  # one forward and backward of the job's first batch through the given module


@dataclass
class Choice:
    compiled: bool
    why: str  # for the job's log line


def choose(mode: str, recorded: bool | None, steps: int, device: torch.device, trial: Trial,
           model: nn.Module, key: str) -> Choice:
    """The job's choice: the mode's, the one a resumed job's checkpoint `recorded`, or auto's estimate."""
    if steps <= 0:
        return Choice(False, "no steps left to run")
    if mode != "auto":
        return Choice(mode == "on", f"compile: {mode}")
    if recorded is not None:
        return Choice(recorded, "as when the job started (its checkpoint records it)")
    saving = EXPECTED_SAVING.get(device.type, 0.0)
    if steps < MIN_STEPS or not saving:
        return Choice(False, f"auto: {steps} steps on {device.type}, too few to repay a compile")
    eager = time_trial(trial, model, device)
    saved_seconds = steps * eager * saving
    cost, basis = compile_seconds(key)
    return Choice(saved_seconds > cost,
                  f"auto: {steps} steps x {eager * 1e3:.0f} ms x {saving:.0%} = {saved_seconds:.0f} s saved "
                  f"{'>' if saved_seconds > cost else '<='} {cost:.0f} s to compile ({basis})")


def compile_forward(forward: nn.Module, trial: Trial, key: str) -> tuple[nn.Module, float, bool]:
    """(`forward` compiled, the seconds its compile took, whether its code came from the machine's cache). The
    compile is paid here, by one trial pass, and its time recorded for `auto`."""
    from torch._dynamo.utils import counters  # torch._dynamo takes a second to import: only when compiling

    compiled = torch.compile(forward)
    before = dict(counters["inductor"])
    started = time.perf_counter()
    trial(compiled)
    seconds = time.perf_counter() - started
    after = counters["inductor"]
    warm = after["fxgraph_cache_hit"] > before.get("fxgraph_cache_hit", 0) and \
        after["fxgraph_cache_miss"] == before.get("fxgraph_cache_miss", 0)
    _write_record(key, {**_read_record(key), "warm" if warm else "cold": seconds})
    return compiled, seconds, warm


def time_trial(trial: Trial, model: nn.Module, device: torch.device) -> float:
    """Seconds of one eager forward and backward (the second of two: the first pays for allocations)."""
    trial(model)
    _synchronize(device)
    started = time.perf_counter()
    trial(model)
    _synchronize(device)
    return time.perf_counter() - started


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":  # kernels run after their launch returns: wait for them before reading the clock
        torch.cuda.synchronize(device)


def shape_key(model: nn.Module, micro_batch: int, device: torch.device, precision: str) -> str:
    """What a compile depends on: torch, the network, the micro-batch, the device and precision."""
    parts = [torch.__version__, type(model).__name__, dataclasses.asdict(model.architecture), micro_batch,
             device.type, precision]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def compile_seconds(key: str) -> tuple[float, str]:
    """(seconds a compile of `key` is expected to take on this machine, on what that estimate rests)."""
    record = _read_record(key)
    if "warm" in record:
        return record["warm"], "as a compile from this machine's cache took"
    if "cold" in record:
        return record["cold"] * WARM_SHARE, f"{WARM_SHARE:.0%} of the first compile here, now cached"
    return COLD_COMPILE_SECONDS, "a first compile on this machine"


def _read_record(key: str) -> dict[str, float]:
    try:
        with open(_record_path(key)) as f:
            record = json.load(f)
        return {k: float(record[k]) for k in ("cold", "warm") if k in record}
    except (OSError, ValueError, TypeError):  # none yet, or damaged: estimated as if never compiled
        return {}


def _write_record(key: str, record: dict[str, float]) -> None:
    path = _record_path(key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.{os.getpid()}"
    with open(temporary, "w") as f:
        json.dump(record, f)
    os.replace(temporary, path)  # whole, even with several jobs writing it at once


def _record_path(key: str) -> str:
    return os.path.join(cache_dir(), "paris", f"{key}.json")
