"""Sampling from the mixture of experts: integrate dx/dt = v from t=1 (noise) to t=0 (data).

At each velocity evaluation the router runs once on (x_t, t); a routing rule (paris.routing) turns its
probabilities into expert weights; each expert with a non-zero weight runs ONCE, on the sub-batch of samples
that chose it, its conditional and unconditional passes batched together (at guidance 1 only the
conditional one). Classifier-free guidance is
applied to each expert before mixing (Paris), or to the mixed velocities ("after", for ablations):
    per-expert:  v = sum_k w_k(text) [v_k(empty) + s (v_k(text) - v_k(empty))]
    after:       v = v(empty) + s (v(text) - v(empty)),  with v(c) = sum_k w_k(c) v_k(c)
Guidance is linear, so the two differ only when the router sees the text (DDM's router): "after" mixes the
unconditional velocities with the router's weights for the empty prompt. A mixture without a router is a
monolith: one model, weight 1.

`route_every=n` runs the router on every n-th velocity evaluation only and reuses its weights in between:
next to small experts the router (a B/2 DiT) costs about a third of a guided top-1 step, and the posterior
p(k | x_t, t) changes slowly from one step to the next. n=1 (the paper) routes at every evaluation.

Speed: on CUDA the networks run under bf16 autocast by default (`precision`, paris.precision; fp32 on request,
and always on a CPU, whose images are unchanged). `compile` runs each expert through torch.compile: the first
steps wait for the compilation (a minute or more for XL/2), so it pays on long runs (`paris evaluate`, a server).
Where every text token is attended (CLIP) the experts get no attention mask, which keeps SDPA on its fastest kernel.
"""

from __future__ import annotations

import itertools
import resource
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import torch

from paris.errors import ParisError
from paris.flow import euler_step, time_grid
from paris.models.dit import DiT
from paris.models.layers import attention_mask
from paris.models.router import Router
from paris.precision import sampling_precision, uses_bf16
from paris.progress import say
from paris.routing import Strategy, parse_strategy, routing_weights

SAMPLERS = ("euler", "heun")


class ExpertUnavailable(ParisError):
    """Expert `expert` could not be loaded (its folder is missing or its file unreadable)."""

    def __init__(self, expert: int, reason: str):
        super().__init__(f"expert {expert} is unavailable: {reason}")
        self.expert = expert
GUIDANCE_MODES = ("per-expert", "after")


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

    def __len__(self) -> int:
        return len(self.loaders)

    def __getitem__(self, k: int) -> DiT:
        if k not in self.resident:
            if self.max_resident and len(self.resident) >= self.max_resident:
                evicted, model = self.resident.popitem(last=False)
                if self.offload:  # otherwise dropped: read again from disk when needed
                    self.offloaded[evicted] = self._to_host(evicted, model)
            if k in self.offloaded:
                self.resident[k] = self._to_device(k, self.offloaded.pop(k))
            else:
                try:
                    model = self.loaders[k]()
                except (ParisError, OSError) as e:
                    raise ExpertUnavailable(k, str(e)) from None
                self.resident[k] = model.to(self.device).eval()
                self.loads += 1
        self.resident.move_to_end(k)
        return self.resident[k]

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
    stats: dict = field(default_factory=lambda: {"expert_passes": 0, "router_calls": 0})
    # Experts that could not be loaded: never called, their router probability given to the others.
    retired: set[int] = field(default_factory=set)


def timesteps(steps: int, shift: float = 1.0) -> list[float]:
    """steps+1 times from 1 to 0; shift > 1 spends more of them at high noise (SD3's time shift)."""
    t = time_grid(steps)
    return (shift * t / (1 + (shift - 1) * t)).tolist()


@torch.no_grad()
def generate(mixture: Mixture, prompts: list[str], strategy: str | Strategy = "top2", steps: int = 50,
             guidance: float = 7.5, seed: int = 0, sampler: str = "euler", shift: float = 1.0,
             guidance_mode: str = "per-expert", route_every: int = 1, trace: bool = False,
             noise: torch.Tensor | None = None, on_step: Callable[[int], None] | None = None,
             precision: str = "auto", compile: bool = False, decode: bool = True) -> tuple[torch.Tensor, dict]:
    """Images [len(prompts), C, H, W] in [-1, 1] (without `decode`: the latents), and statistics (expert and router
    passes, routing trace if asked).

    `noise`: the latents at t=1 (default: drawn from `seed`, which also seeds stochastic routing rules), as a
    server batching requests of several seeds passes them; `on_step(i)` is called after step i of `steps`.
    `precision` and `compile`: see the top of this file."""
    if sampler not in SAMPLERS:
        raise ParisError(f"sampler must be one of {SAMPLERS}; got {sampler!r}")
    generator = torch.Generator().manual_seed(seed)
    routing = [] if trace else None
    velocity = velocity_field(mixture, prompts, strategy, guidance, guidance_mode, route_every, generator, routing,
                              precision, compile)
    x = initial_noise(mixture, len(prompts), generator) if noise is None else noise.to(mixture.experts.device)
    times = timesteps(steps, shift)
    for step, (t, t_next) in enumerate(zip(times[:-1], times[1:]), start=1):
        v = velocity(x, t)
        if sampler == "heun" and t_next > 0:  # Heun: average the slopes at both ends (last step stays Euler)
            v = (v + velocity(euler_step(x, v, t, t_next), t_next)) / 2
        x = euler_step(x, v, t, t_next)
        if on_step is not None:
            on_step(step)
    stats = {"expert_passes_per_image": mixture.stats["expert_passes"] / len(prompts) / steps,
             "router_calls_per_step": mixture.stats["router_calls"] / steps,
             "peak_memory_mib": peak_memory_mib(mixture.experts.device)}
    if trace:
        stats["routing"] = torch.stack(routing).transpose(0, 1)  # [B, evaluations, K]
    return mixture.autoencoder.decode(x.float().cpu()) if decode else x.float().cpu(), stats


def initial_noise(mixture: Mixture, n: int, generator: torch.Generator) -> torch.Tensor:
    """x at t=1: n latents of standard noise, drawn on the CPU (the same on every device) from `generator`."""
    return torch.randn(n, *mixture.latent_shape, generator=generator).to(mixture.experts.device)


def velocity_field(mixture: Mixture, prompts: list[str], strategy: str | Strategy = "top2", guidance: float = 7.5,
                   guidance_mode: str = "per-expert", route_every: int = 1, generator: torch.Generator | None = None,
                   routing: list | None = None, precision: str = "auto",
                   compile: bool = False) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """v(x, t): the guided velocity of the mixture for these prompts, for any ODE solver to integrate. Counts
    its passes in `mixture.stats` (reset here) and appends each evaluation's weights to `routing` if given.
    v is fp32 whatever `precision` the networks run in."""
    if not prompts:
        raise ParisError("no prompts given; pass at least one --prompt")
    if guidance_mode not in GUIDANCE_MODES:
        raise ParisError(f"guidance mode must be one of {GUIDANCE_MODES}; got {guidance_mode!r}")
    if route_every < 1:
        raise ParisError(f"route_every must be at least 1 (1 = route at every step), got {route_every}")
    num_experts = len(mixture.experts)
    if mixture.router is None and num_experts != 1:
        raise ParisError(f"a mixture of {num_experts} experts needs a router")
    strategy = parse_strategy(strategy, num_experts) if isinstance(strategy, str) else strategy
    device = mixture.experts.device
    uses_bf16(precision, device)  # a bad name fails now
    text, mask = mixture.text_encoder.encode(prompts)
    null_text, null_mask = mixture.text_encoder.encode([""])
    if attention_mask(torch.cat([mask, null_mask])) is None:  # checked here, on the CPU
        mask = null_mask = None
    cond = {"text": text, "mask": mask, "null_text": null_text, "null_mask": null_mask}
    cond = {key: None if value is None else value.to(device) for key, value in cond.items()}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    routed, evaluations = {}, 0  # routed: the last router call's weights (text, empty prompt)
    mixture.stats.update(expert_passes=0, router_calls=0)

    def route(x, t: float):
        routed["text"] = routed["empty"] = _weights(mixture, x, t, cond["text"], cond["mask"], strategy, generator)
        if guidance_mode == "after" and mixture.router is not None and mixture.router.architecture.text_dim:
            null_mask = None if cond["null_mask"] is None else cond["null_mask"].expand(len(x), -1)
            empty = (cond["null_text"].expand(len(x), -1, -1), null_mask)
            routed["empty"] = _weights(mixture, x, t, *empty, strategy, generator)

    @torch.no_grad()
    def velocity(x, t: float):
        nonlocal evaluations
        with sampling_precision(precision, device):
            if evaluations % route_every == 0:
                route(x, t)
            evaluations += 1
            while True:
                try:
                    v = mixed_velocity(mixture, x, t, routed["text"], routed["empty"], cond, guidance, guidance_mode,
                                       compile)
                    break
                except ExpertUnavailable as e:  # degrade: go on without it, and route again among the others
                    retire(mixture, e.expert, str(e))
                    route(x, t)
        if routing is not None:
            routing.append(routed["text"].cpu())
        return v

    return velocity


def peak_memory_mib(device: torch.device) -> float:
    """The GPU memory peak since the last reset; on CPU, this process's peak resident memory so far."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:  # VmHWM starts afresh at exec; ru_maxrss would carry over the peak of the parent that forked us
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except OSError:  # not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # macOS reports bytes


def _weights(mixture: Mixture, x, t: float, text, mask, strategy: Strategy, generator) -> torch.Tensor:
    if mixture.router is None:
        return torch.ones(len(x), 1, device=x.device)
    router_text = {"text": text, "text_mask": mask} if mixture.router.architecture.text_dim else {}
    mixture.stats["router_calls"] += 1
    probs = mixture.router(x, torch.full((len(x),), t, device=x.device), **router_text).float().softmax(-1).cpu()
    if mixture.retired:
        probs[:, sorted(mixture.retired)] = 0
        probs = probs / probs.sum(1, keepdim=True)
    return routing_weights(probs, strategy, generator).to(x.device)


def retire(mixture: Mixture, expert: int, reason: str) -> None:
    """Sample on without `expert` (one warning line): the router's probability for it goes to the others."""
    if expert in mixture.retired or len(mixture.retired) + 1 >= len(mixture.experts):
        raise ParisError(f"{reason}; no other expert can take its place" if expert not in mixture.retired else reason)
    mixture.retired.add(expert)
    say(f"{reason}; sampling goes on without it, its router weight shared by the other experts", warning=True)


def mixed_velocity(mixture: Mixture, x, t: float, weights, empty_weights, cond: dict, guidance: float,
                   mode: str, compile: bool = False) -> torch.Tensor:
    """sum_k w_k v_k over the experts that some sample uses; each runs once on its own sub-batch. With `compile`
    through torch.compile, whose compiled code is kept with the DiT class: every expert of one shape reuses it.
    At guidance 1 the velocity is the conditional one in both modes, so the unconditional pass is not run."""
    v_text, v_empty = torch.zeros_like(x), torch.zeros_like(x)
    unguided = guidance == 1
    either = weights > 0 if unguided else (weights > 0) | (empty_weights > 0)
    used = [k for k in range(weights.shape[1]) if either[:, k].any()]
    resident_first = sorted(used, key=lambda k: k not in mixture.experts.resident)  # fewer loads under a cap
    for k in resident_first:
        rows = either[:, k].nonzero().squeeze(1)
        w, w_empty = weights[rows, k].view(-1, 1, 1, 1), empty_weights[rows, k].view(-1, 1, 1, 1)
        t_rows = torch.full((len(rows),), t, device=x.device)
        expert = torch.compile(mixture.experts[k]) if compile else mixture.experts[k]
        mask = None if cond["mask"] is None else cond["mask"][rows]
        mixture.stats["expert_passes"] += len(rows)
        if unguided:
            v_text[rows] += w * expert(x[rows], t_rows, cond["text"][rows], mask)
            continue
        vt, ve = conditional_velocities(expert, x[rows], t_rows, cond["text"][rows], mask, cond["null_text"],
                                        cond["null_mask"])
        if mode == "per-expert":
            v_text[rows] += w * guide(vt, ve, guidance)
        else:
            v_text[rows] += w * vt
            v_empty[rows] += w_empty * ve
    return v_text if mode == "per-expert" or unguided else guide(v_text, v_empty, guidance)


def conditional_velocities(model, x, t, text, mask, null_text, null_mask):
    """(v(text), v(empty)) of one model from one batched forward pass; t is a [B] tensor; the masks are both
    None where every token is attended."""
    n = len(x)
    mask = None if mask is None else torch.cat([mask, null_mask.expand(n, -1)])
    v = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([text, null_text.expand(n, -1, -1)]), mask)
    return v.chunk(2)


def guide(v_text: torch.Tensor, v_empty: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: v(empty) + s (v(text) - v(empty))."""
    return v_empty + scale * (v_text - v_empty)

