"""The mixture: the experts (loaded on first use, in a pool that may cap how many stay on the device), the router
that weighs them, and the encoders around them. A mixture without a router is a monolith: one model, weight 1.

An expert that cannot be loaded is retired (`retire`): sampling goes on without it, its router probability shared
by the others (RUN/retired.json retires one on purpose: paris.roster.retired).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import torch

from paris.errors import ParisError
from paris.models.dit import DiT
from paris.models.quantize import check_quantization, quantized
from paris.models.resident import resident_bytes
from paris.models.router import Router
from paris.progress import say


class ExpertUnavailable(ParisError):
    """Expert `expert` could not be loaded (its folder is missing or its file unreadable)."""

    def __init__(self, expert: int, reason: str):
        super().__init__(f"expert {expert} is unavailable: {reason}")
        self.expert = expert


class ExpertPool:
    """Experts loaded on first use; with `max_resident` at most that many stay on the device (least recently
    used leave first), so the memory of top-k sampling does not grow with K.

    An evicted expert is dropped and read again from disk when needed, or with `offload` kept in host memory
    and copied back: a cap then costs a host-to-device copy instead of a disk read, and host RAM holds every
    expert used so far. On CUDA the host copy is pinned (page-locked), so the copy back is fast and
    non-blocking. It is made at an expert's first eviction and kept: sampling never changes the weights, so a
    later eviction only drops the device copy. On a CPU device host memory IS the device: an offloaded expert
    simply stays loaded, so the cap only bounds how many count as resident (`resident`), not the memory, which
    grows as without a cap.

    `quantize` (sample.quantize, set by `use_quantization`) is how an expert's linear layers are held once loaded
    (paris.models.quantize). `resident_bytes` is what the resident experts hold on the device, measured as each
    loads (paris.models.resident), and `peak_resident_bytes` its most since `reset_peak`.
    """

    def __init__(self, loaders: list[Callable[[], DiT]], max_resident: int | None = None, device: str = "cpu",
                 offload: bool = False):
        if max_resident is not None and max_resident < 1:
            raise ParisError(f"max_resident_experts must be at least 1 (or None: all), got {max_resident}")
        if offload and max_resident is None:
            raise ParisError("offload keeps the experts that a cap evicts in host memory; without "
                             "max_resident_experts nothing is evicted, so give a cap too (or leave offload out)")
        self.loaders, self.max_resident, self.device = loaders, max_resident, torch.device(device)
        self.offload = offload
        self.resident: OrderedDict[int, DiT] = OrderedDict()  # on the device, least recently used first
        self.offloaded: dict[int, DiT] = {}  # evicted with offload: its weights are its host copy
        self.host_copies: dict[int, list[torch.Tensor]] = {}  # an offloaded expert's weights in host memory
        self.loads = 0  # how often an expert was read from disk: the price of a small cap
        self.quantize = "none"
        self.sizes: dict[int, int] = {}  # bytes of each expert loaded so far
        self.resident_bytes = self.peak_resident_bytes = 0  # ints: a server's health check reads them unlocked

    def __len__(self) -> int:
        return len(self.loaders)

    def __getitem__(self, k: int) -> DiT:
        if k not in self.resident:
            if self.max_resident and len(self.resident) >= self.max_resident:
                evicted, model = self.resident.popitem(last=False)
                self.resident_bytes -= self.sizes[evicted]
                if self.offload:  # otherwise dropped: read again from disk when needed
                    self.offloaded[evicted] = self._to_host(evicted, model)
            if k in self.offloaded:
                self.resident[k] = self._to_device(k, self.offloaded.pop(k))
            else:
                try:
                    model = self.loaders[k]()
                except (ParisError, OSError) as e:
                    raise ExpertUnavailable(k, str(e)) from None
                self.resident[k] = quantized(model.to(self.device).eval(), self.quantize)
                self.sizes[k] = resident_bytes(self.resident[k])
                self.loads += 1
            self.resident_bytes += self.sizes[k]
            self.peak_resident_bytes = max(self.peak_resident_bytes, self.resident_bytes)
        self.resident.move_to_end(k)
        return self.resident[k]

    def use_quantization(self, quantize: str) -> None:
        """Hold experts loaded from now on as `quantize` says (checked here: torchao, the device); experts held
        otherwise are dropped, to be read again as they are needed."""
        if quantize == self.quantize:
            return
        check_quantization(quantize, self.device)
        if quantize != "none" and self.offload and self.device.type != "cpu":
            raise ParisError("offload copies an expert's plain weights to host memory, not int8 ones; leave out "
                             "--offload or --quantize", "quantize")
        self.resident.clear()
        self.offloaded.clear()
        self.host_copies.clear()
        self.sizes.clear()
        self.quantize, self.resident_bytes = quantize, 0

    def reset_peak(self) -> None:
        self.peak_resident_bytes = self.resident_bytes

    def _to_host(self, k: int, model: DiT) -> DiT:
        """Expert k's `model` with its weights in host memory: its host copy, made (pinned on CUDA) the first time."""
        if self.device.type == "cpu":
            return model  # already there
        tensors = _weights_of(model)
        if k not in self.host_copies:
            pin = self.device.type == "cuda"
            self.host_copies[k] = [torch.empty_like(t, device="cpu", pin_memory=pin).copy_(t) for t in tensors]
        for tensor, host in zip(tensors, self.host_copies[k]):
            tensor.data = host  # the device copy is freed; the host copy stays for the next eviction
        return model

    def _to_device(self, k: int, model: DiT) -> DiT:
        """Expert k's offloaded `model` back on the device, copied from its host copy (none on a CPU device)."""
        for tensor, host in zip(_weights_of(model), self.host_copies.get(k, ())):
            tensor.data = host.to(self.device, non_blocking=True)
        return model


def _weights_of(model: DiT) -> list[torch.Tensor]:
    return list(itertools.chain(model.parameters(), model.buffers()))


@dataclass
class Mixture:
    experts: ExpertPool
    router: Router | None  # None: a monolith (exactly one expert)
    text_encoder: object  # paris.models.encoders.TextEncoder
    autoencoder: object
    latent_shape: tuple[int, int, int]
    stats: dict = field(default_factory=lambda: {"expert_passes": 0, "forward_passes": 0, "router_calls": 0})
    # Experts that could not be loaded: never called, their router probability given to the others.
    retired: set[int] = field(default_factory=set)
    lora_experts: set[int] = field(default_factory=set)  # published as a LoRA: their strength is a sampling setting


def retire(mixture: Mixture, expert: int, reason: str) -> None:
    """Sample on without `expert` (one warning line): the router's probability for it goes to the others."""
    if expert in mixture.retired or len(mixture.retired) + 1 >= len(mixture.experts):
        raise ParisError(f"{reason}; no other expert can take its place" if expert not in mixture.retired else reason)
    mixture.retired.add(expert)
    say(f"{reason}; sampling goes on without it, its router weight shared by the other experts", warning=True)
