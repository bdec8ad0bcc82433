"""Launch the K per-expert jobs on some backend. Every backend runs the very same command per expert,

    paris train-expert RUN --expert k              (wrapped in torchrun when an expert gets several GPUs)

and each job resumes from its own LATEST checkpoint, so a backend only has to start jobs and start them
again after a failure: no process group, queue or service ever spans two experts.

    local     K processes on this machine, a concurrency limit, a GPU group per process  (local.py)
    slurm     one sbatch job array, one task per expert, srun torchrun inside              (slurm.py)
    ray       one Ray task per expert with its resource needs                               (ray.py)
    skypilot  one task YAML per expert, the run's bucket mounted                            (skypilot.py)

Every backend module has the same entry, `launch(request: LaunchRequest) -> Launched`; `backend(name)` finds it.
"""

from __future__ import annotations

import importlib
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from paris.errors import ParisError
from paris.run import RunDir

BACKENDS = ("local", "slurm", "ray", "skypilot")


@dataclass
class LaunchRequest:
    """Which experts to start, and the options of every backend (each reads those it has)."""

    run: RunDir
    targets: dict[int, int]  # expert -> the steps it trains (for progress)
    overrides: list[str] = field(default_factory=list)  # `--set` values passed to every expert's command
    gpus_per_expert: int | None = None  # 0: CPU; None: the backend's default (slurm, skypilot, local with gpus: 1; else 0)
    jobs: int | None = None  # local: experts at once; None: one per GPU group, else per CPU core
    gpus: list[str] = field(default_factory=list)  # local: GPU ids to share out
    nodes: int = 1  # slurm, skypilot: nodes per expert
    time_limit: str = "24:00:00"  # slurm
    slurm_partition: str | None = None  # slurm; None: the cluster's default
    accelerators: str = "A100:1"  # skypilot
    ray_address: str = "auto"  # ray
    out: Path = Path("launch")  # slurm, skypilot: where the scripts go; local: logs
    submit: bool = False  # slurm, skypilot: also submit what was written

    @property
    def experts(self) -> list[int]:
        return list(self.targets)


@dataclass
class Launched:
    codes: dict[int, int] | None  # exit code per expert that ran to its end here; None: jobs were written or submitted
    note: str = ""  # what was written or submitted, for the person who launched


def shell_line(argv: list[str], expanded: tuple[str, ...]) -> str:
    """`argv` as one shell command line: every word quoted (a `--set` value can never run code on a node) except
    the words starting with one of `expanded`, which carry the scheduler's variables for the node's shell."""
    return " ".join(word if word.startswith(expanded) else shlex.quote(word) for word in argv)


def backend(name: str) -> Callable[[LaunchRequest], Launched]:
    """The `launch` function of backend `name`."""
    if name not in BACKENDS:
        raise ParisError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return importlib.import_module(f"paris.launch.{name}").launch


def train_command(run_url: str, expert: int, overrides: list[str] = (), python: str = "python",
                  nproc_per_node: int = 1, torchrun_args: list[str] = ()) -> list[str]:
    """The argv that trains one expert: python -m paris ..., or torchrun ... -m paris ... for several GPUs."""
    paris = ["-m", "paris", "train-expert", run_url, "--expert", str(expert)]
    for item in overrides:
        paris += ["--set", item]
    if nproc_per_node == 1 and not torchrun_args:
        return [python, *paris]
    return [python, "-m", "torch.distributed.run", f"--nproc-per-node={nproc_per_node}", *torchrun_args, *paris]
