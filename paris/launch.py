"""Run the K per-expert jobs as independent OS processes on this machine.

Each process is the ordinary `paris train-expert RUN --expert k` command: it shares nothing with the
others but the files it reads, and one that fails does not stop the rest. Output goes to a log per expert.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from paris.errors import ParisError
from paris.run import RunDir

console = Console(stderr=True)


def launch_local(run: RunDir, experts: list[int], total_steps: int, jobs: int, overrides: list[str] = (),
                 log_dir: Path | None = None) -> dict[int, int]:
    """Train `experts` with at most `jobs` processes at once; returns each expert's exit code."""
    if jobs < 1:
        raise ParisError(f"the number of experts trained at once must be at least 1, got {jobs}")
    log_dir = log_dir or Path("logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    pending, running, codes = list(experts), {}, {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[status]}"))
    with Progress(*columns, console=console) as progress:
        tasks = {k: progress.add_task(f"expert {k}", total=total_steps, status="waiting") for k in experts}
        while pending or running:
            while pending and len(running) < jobs:
                k = pending.pop(0)
                running[k] = _start(run, k, overrides, log_dir / f"expert_{k}.log")
                progress.update(tasks[k], status="running")
            for k, process in list(running.items()):
                progress.update(tasks[k], completed=_last_step(run, k))
                if process.poll() is not None:
                    codes[k] = process.returncode
                    del running[k]
                    status = "done" if codes[k] == 0 else f"[red]failed (exit {codes[k]}), see {log_dir}/expert_{k}.log"
                    progress.update(tasks[k], completed=_last_step(run, k), status=status)
            time.sleep(0.5)
    return codes


def _start(run: RunDir, expert: int, overrides, log_path: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "paris", "train-expert", run.url, "--expert", str(expert)]
    for item in overrides:
        command += ["--set", item]
    with open(log_path, "a") as log:  # the child keeps its own handle
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _last_step(run: RunDir, expert: int) -> int:
    """The newest logged step of an expert (0 before its first log line)."""
    path = f"experts/{expert}/progress.json"
    return run.read_json(path)["step"] if run.exists(path) else 0
