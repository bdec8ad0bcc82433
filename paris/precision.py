"""Numeric precision, one rule for training and sampling (the `precision` key of their configs):

    auto  bf16 autocast on CUDA, fp32 elsewhere: a CPU computes exactly as in fp32, outputs unchanged
    bf16  bf16 autocast on any device: weights stay fp32, matmuls and attention run in bf16 (no loss scaling)
    fp32  fp32 everywhere, TF32 off while sampling: the reference to compare a bf16 image with

DiT, PixArt and Paris train and sample in bf16 on GPUs; bf16 matmuls are several times faster than fp32 ones.
"""

from __future__ import annotations

import contextlib

import torch

from paris.errors import ParisError

PRECISIONS = ("auto", "bf16", "fp32")


def uses_bf16(precision: str, device: torch.device | str) -> bool:
    if precision not in PRECISIONS:
        raise ParisError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return precision == "bf16" or (precision == "auto" and torch.device(device).type == "cuda")


def autocast(precision: str, device: torch.device | str) -> torch.autocast:
    """bf16 autocast where `precision` asks for it on `device`; a disabled (do-nothing) context otherwise."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(precision, device))


@contextlib.contextmanager
def sampling_precision(precision: str, device: torch.device | str):
    """`autocast`; on CUDA also TF32 for the matmuls that autocast leaves in fp32 when bf16 (as training runs),
    and TF32 off when fp32 (even after training in this process turned it on). The process's own setting is
    restored on leaving."""
    bf16 = uses_bf16(precision, device)
    before = torch.get_float32_matmul_precision()
    if torch.device(device).type == "cuda":
        torch.set_float32_matmul_precision("high" if bf16 else "highest")  # high: TF32
    try:
        with autocast(precision, device):
            yield
    finally:
        torch.set_float32_matmul_precision(before)
