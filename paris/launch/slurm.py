"""The `slurm` backend: one sbatch job array, one array task per expert, `srun torchrun` inside each.

Array tasks are scheduled, fail and get requeued independently, which is exactly the isolation the experts
need. SLURM sends SIGTERM two minutes before a task's time limit or on preemption; the job checkpoints
and, requeued, resumes from its LATEST.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from paris.errors import ParisError
from paris.launch import Launched, LaunchRequest, shell_line, train_command


def launch(request: LaunchRequest) -> Launched:
    path = write_sbatch(request.run.url, request.experts, request.out, request.overrides, request.nodes,
                        1 if request.gpus_per_expert is None else request.gpus_per_expert, request.time_limit, request.slurm_partition)
    return Launched(None, f"wrote {path}" + (f"; {submit(path)}" if request.submit else f"; submit it with: sbatch {path}"))


def write_sbatch(run_url: str, experts: list[int], out_dir: Path, overrides: list[str] = (), nodes: int = 1,
                 gpus_per_node: int = 1, time_limit: str = "24:00:00", partition: str | None = None,
                 max_parallel: int = 0) -> Path:
    """Write <out_dir>/paris_experts.sbatch and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    array = ",".join(map(str, experts)) + (f"%{max_parallel}" if max_parallel else "")
    # torchrun on every node; the first node of the task's allocation hosts the rendezvous.
    rendezvous = ["--nnodes=$SLURM_NNODES", "--rdzv-backend=c10d", "--rdzv-id=$SLURM_JOB_ID",
                  '--rdzv-endpoint="$head":29500']
    command = train_command(run_url, 0, overrides, "python", gpus_per_node, rendezvous)
    command[command.index("--expert") + 1] = "$SLURM_ARRAY_TASK_ID"
    quoted = shell_line(command, ("--nnodes", "--rdzv", "$"))
    lines = [
        "#!/bin/bash",
        "#SBATCH --job-name=paris-experts",
        f"#SBATCH --array={array}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={gpus_per_node}",
        f"#SBATCH --time={time_limit}",
        f"#SBATCH --output={out_dir.resolve()}/expert_%a.log",
        # SIGTERM 2 minutes before the time limit: the job checkpoints; preempted tasks are requeued.
        "#SBATCH --signal=TERM@120",
        "#SBATCH --requeue",
        *([f"#SBATCH --partition={partition}"] if partition else []),
        "set -euo pipefail",
        'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f"srun {quoted}",
    ]
    path = out_dir / "paris_experts.sbatch"
    path.write_text("\n".join(lines) + "\n")
    return path


def submit(path: Path) -> str:
    """sbatch the script; returns sbatch's answer (the job id line)."""
    if shutil.which("sbatch") is None:
        raise ParisError(f"sbatch not found; run this on a SLURM login node, or submit {path} there yourself")
    result = subprocess.run(["sbatch", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        raise ParisError(f"sbatch refused {path}: {result.stderr.strip()}")
    return result.stdout.strip()
