"""Launch the K per-expert jobs on some backend. Every backend runs the very same command per expert,

    paris train-expert RUN --expert k              (wrapped in torchrun when an expert gets several GPUs)

and each job resumes from its own LATEST checkpoint, so a backend only has to start jobs and start them
again after a failure: no process group, queue or service ever spans two experts.

    local     K processes on this machine, a concurrency limit, a GPU group per process  (local.py)
    slurm     one sbatch job array, one task per expert, srun torchrun inside              (slurm.py)
    ray       one Ray task per expert with its resource needs                               (ray.py)
    skypilot  one task YAML per expert, the run's bucket mounted                            (skypilot.py)
"""

from __future__ import annotations

BACKENDS = ("local", "slurm", "ray", "skypilot")


def train_command(run_url: str, expert: int, overrides: list[str] = (), python: str = "python",
                  nproc_per_node: int = 1, torchrun_args: list[str] = ()) -> list[str]:
    """The argv that trains one expert: python -m paris ..., or torchrun ... -m paris ... for several GPUs."""
    paris = ["-m", "paris", "train-expert", run_url, "--expert", str(expert)]
    for item in overrides:
        paris += ["--set", item]
    if nproc_per_node == 1 and not torchrun_args:
        return [python, *paris]
    return [python, "-m", "torch.distributed.run", f"--nproc-per-node={nproc_per_node}", *torchrun_args, *paris]
