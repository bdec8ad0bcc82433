"""The `local` backend: the K per-expert jobs as independent OS processes on this machine.

Each process shares nothing with the others but the files it reads, and one that fails does not stop the
rest. With GPUs, each running process gets its own group of them through CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from paris import layout
from paris import progress
from paris.errors import ParisError
from paris.launch import Launched, LaunchRequest, train_command
from paris.run import RunDir

def launch(request: LaunchRequest) -> Launched:
    per_expert = (1 if request.gpus else 0) if request.gpus_per_expert is None else request.gpus_per_expert
    codes = launch_local(request.run, request.targets, local_jobs(request.jobs, len(request.targets)),
                         request.overrides, request.out, request.gpus, per_expert)
    return Launched(codes)


def local_jobs(jobs: int | None, num_experts: int) -> int:
    """How many experts to train at once: `jobs`, or by default one per CPU core and at most one per expert."""
    return min(num_experts, available_cores()) if jobs is None else jobs


def available_cores() -> int:
    """The cores this process may run on (its affinity, which a container or `taskset` narrows), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def launch_local(run: RunDir, targets: dict[int, int], jobs: int, overrides: list[str] = (),
                 log_dir: Path | None = None, gpus: list[str] = (), gpus_per_expert: int = 1) -> dict[int, int]:
    """Train the experts of `targets` (expert -> its steps, for the progress bar), at most `jobs` at once (or
    one per GPU group); returns each expert's exit code."""
    slots = gpu_groups(gpus, gpus_per_expert) if gpus else [None] * jobs
    if not slots:
        raise ParisError(f"the number of experts trained at once must be at least 1, got {jobs}")
    # The cores are shared out, never oversubscribed: torch would give every process a thread per core, and
    # two such processes on two cores run many times slower than two of one thread each.
    processes = len(gpus) if gpus else jobs
    threads = max(1, available_cores() // processes)
    log_dir = log_dir or Path("logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    pending, running, codes, free = list(targets), {}, {}, list(slots)
    with progress.bar(f"{len(targets)} experts", sum(targets.values())) as bar:
        while pending or running:
            while pending and free:
                k, slot = pending.pop(0), free.pop(0)
                running[k] = (_start(run, k, overrides, log_dir / f"expert_{k}.log", slot, threads), slot)
            for k, (process, slot) in list(running.items()):
                if process.poll() is not None:
                    codes[k] = process.returncode
                    del running[k]
                    free.append(slot)
                    if codes[k]:
                        progress.say(f"expert {k} failed (exit {codes[k]}); see {log_dir}/expert_{k}.log", warning=True)
            done = [k for k in codes if codes[k] == 0]
            bar.update(sum(min(_last_step(run, k), targets[k]) for k in targets),
                       running=",".join(map(str, running)) or "-", done=",".join(map(str, done)) or "-")
            time.sleep(0.5)
    return codes


def gpu_groups(gpus: list[str], per_expert: int) -> list[str]:
    """Split GPU ids into CUDA_VISIBLE_DEVICES values of `per_expert` GPUs each: 0,1,2,3 by 2 -> "0,1", "2,3"."""
    if per_expert < 1 or len(gpus) % per_expert:
        raise ParisError(f"{len(gpus)} GPUs cannot be split into groups of {per_expert}; "
                         "give a number of GPUs that is a multiple of --gpus-per-expert")
    return [",".join(gpus[i : i + per_expert]) for i in range(0, len(gpus), per_expert)]


def _start(run: RunDir, expert: int, overrides, log_path: Path, gpu_group: str | None,
           threads: int) -> subprocess.Popen:
    # OMP_NUM_THREADS sizes torch's thread pool when it starts; one the user exported wins, as does expert.threads.
    env = {"OMP_NUM_THREADS": str(threads), **os.environ, "PYTHONUNBUFFERED": "1"}
    nproc = 1
    if gpu_group is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu_group
        nproc = len(gpu_group.split(","))
    # Each group gets its own rendezvous port so that two torchrun jobs on one machine never meet.
    torchrun_args = [f"--master-port={29500 + expert}"] if nproc > 1 else []
    command = train_command(run.url, expert, overrides, sys.executable, nproc, torchrun_args)
    with open(log_path, "a") as log:  # the child keeps its own handle
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def _last_step(run: RunDir, expert: int) -> int:
    """The newest logged step of an expert (0 before its first log line)."""
    path = layout.progress(layout.expert(expert))
    return run.read_json(path)["step"] if run.exists(path) else 0
