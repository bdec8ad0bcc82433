"""The `ray` backend: one Ray task per expert, with the CPUs/GPUs it needs, on an existing Ray cluster.

Each task runs the ordinary per-expert command in a subprocess on the node Ray picked, so the cluster's
workers need paris installed and the run directory reachable (a bucket URL, or a shared file system).
A failed or lost task is reported for its expert alone; the others run on.
"""

from __future__ import annotations

import subprocess
import sys

from paris.errors import ParisError
from paris.launch import Launched, LaunchRequest, train_command


def launch(request: LaunchRequest) -> Launched:
    return Launched(launch_ray(request.run.url, request.experts, request.overrides, request.ray_address,
                               request.gpus_per_expert or 0))


def launch_ray(run_url: str, experts: list[int], overrides: list[str] = (), address: str | None = "auto",
               gpus_per_expert: int = 0, cpus_per_expert: int = 1) -> dict[int, int]:
    """Run one task per expert and wait for all; returns each expert's exit code (-1: the task was lost)."""
    try:
        import ray
    except ImportError:
        raise ParisError("the ray backend needs `pip install ray`") from None
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    except ConnectionError as e:
        raise ParisError(f"cannot reach a Ray cluster at {address!r} ({e}); start one with `ray start --head` "
                         "or pass --ray-address") from None

    @ray.remote
    def train_one(expert: int) -> int:
        nproc = max(1, gpus_per_expert)
        return subprocess.run(train_command(run_url, expert, overrides, sys.executable, nproc)).returncode

    refs = {k: train_one.options(name=f"paris-expert-{k}", num_cpus=cpus_per_expert, num_gpus=gpus_per_expert).remote(k)
            for k in experts}
    codes = {}
    for k, ref in refs.items():
        try:
            codes[k] = ray.get(ref)
        except ray.exceptions.RayError:
            codes[k] = -1
    ray.shutdown()
    return codes
