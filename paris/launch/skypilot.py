"""The `skypilot` backend: one SkyPilot task YAML per expert, each on whatever cloud has the GPUs.

The run's bucket is mounted at /paris-run on every node, the local checkout is synced as the workdir, and
the task runs the ordinary per-expert command under torchrun. Spot instances by default: a preempted
task relaunched by `sky jobs launch` resumes from its LATEST checkpoint.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from paris.errors import ParisError
from paris.launch import Launched, LaunchRequest, shell_line, train_command

MOUNT = "/paris-run"


def launch(request: LaunchRequest) -> Launched:
    paths = write_tasks(request.run.url, request.experts, request.out, request.overrides, request.accelerators,
                        request.nodes)
    if request.submit:
        submit(paths)
    return Launched(None, "wrote " + ", ".join(map(str, paths)) + ("; submitted" if request.submit else ""))


def write_tasks(run_url: str, experts: list[int], out_dir: Path, overrides: list[str] = (),
                accelerators: str = "A100:1", nodes: int = 1, use_spot: bool = True) -> list[Path]:
    """Write <out_dir>/expert_<k>.yaml for each expert; returns the paths."""
    if "://" not in run_url:
        raise ParisError(f"SkyPilot tasks run on other machines: the run directory must be a bucket URL "
                         f"(s3://, gs://, ...), not {run_url}")
    gpus = int(accelerators.split(":")[1]) if ":" in accelerators else 1
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in experts:
        rendezvous = ["--nnodes=$SKYPILOT_NUM_NODES", "--node-rank=$SKYPILOT_NODE_RANK",
                      '--master-addr=$(echo "$SKYPILOT_NODE_IPS" | head -n1)', "--master-port=29500"]
        command = train_command(MOUNT, k, overrides, "python", gpus, rendezvous)
        task = {
            "name": f"paris-expert-{k}",
            "num_nodes": nodes,
            "resources": {"accelerators": accelerators, "use_spot": use_spot},
            "workdir": ".",
            "file_mounts": {MOUNT: {"source": run_url, "mode": "MOUNT"}},
            "setup": "pip install torch==2.13.0 && pip install -e .",
            "run": shell_line(command, ("--nnodes", "--node-rank", "--master-addr", "--master-port")) + "\n",
        }
        path = out_dir / f"expert_{k}.yaml"
        path.write_text(yaml.safe_dump(task, sort_keys=False))
        paths.append(path)
    return paths


def submit(paths: list[Path]) -> None:
    """Launch each task as a managed job (`sky jobs launch`), which recovers from spot preemption."""
    if shutil.which("sky") is None:
        raise ParisError("the `sky` command was not found; `pip install skypilot` or launch the written YAML yourself")
    for path in paths:
        subprocess.run(["sky", "jobs", "launch", "--yes", str(path)], check=False)
