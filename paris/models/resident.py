"""The bytes a network holds in memory: what a resident expert costs its device.

A quantised weight (torchao's Int8Tensor) is a tensor subclass that reports the shape and dtype of the weight it
stands for; its memory is that of the tensors inside it (int8 data, scales, zero points), so those are what is
counted. Each storage is counted once, whole: a view costs what its storage holds. Tensors on the meta device
count the bytes they would hold, so a network too large to build can still be measured.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass


def resident_bytes(module: nn.Module) -> int:
    """Bytes of `module`'s parameters and buffers, quantised ones by the tensors that hold them."""
    seen, total = set(), 0
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        for plain in _plain_tensors(tensor):
            if plain.device.type == "meta":
                total += plain.numel() * plain.element_size()
                continue
            storage = plain.untyped_storage()
            key = (plain.device, storage.data_ptr())
            if key not in seen:
                seen.add(key)
                total += storage.nbytes()
    return total


def _plain_tensors(tensor: torch.Tensor):
    """The ordinary tensors that hold `tensor`'s data: itself, or for a subclass its inner tensors, recursively."""
    if not is_traceable_wrapper_subclass(tensor):
        yield tensor
        return
    names, _ = tensor.__tensor_flatten__()
    for name in names:
        yield from _plain_tensors(getattr(tensor, name))
