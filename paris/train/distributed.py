"""Plain torchrun inside ONE job: the process group spans the GPUs of one expert, never two experts.

    torchrun --nproc-per-node=8 -m paris train-expert RUN --expert 3
Without torchrun's environment this is a single process and nothing is initialised.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """Average of a scalar over all processes (the value itself when alone)."""
        if self.world_size > 1:
            value = value.clone()
            dist.all_reduce(value)
            value /= self.world_size
        return value

    def any(self, flag: bool) -> bool:
        """True on every process when it is True on any (e.g. one of them got SIGTERM)."""
        if self.world_size == 1:
            return flag
        value = torch.tensor(float(flag), device=self.device)
        dist.all_reduce(value)
        return bool(value.item() > 0)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def setup() -> Distributed:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        # A dead peer should fail the job in minutes, not hang it for hours.
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=10))
    return Distributed(int(os.environ.get("RANK", "0")), world_size, device)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
