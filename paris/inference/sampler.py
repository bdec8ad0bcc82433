"""Sampling from the mixture: integrate dx/dt = v from t=1 (noise) to t=0 (data), with the velocity of
paris.inference.velocity.

`integrate` is the one integrator of paris's front ends (Python, `paris generate`, `paris serve`, `paris
evaluate`, the demo, training previews): Euler, or Heun (the slopes at both ends of a step averaged; the last
step, which ends at t=0, stays Euler), on the grid of `timesteps`. The diffusers pipeline steps through diffusers'
FlowMatch schedulers set to the same grid, and draws the same images (tests/test_diffusers_pipeline.py).
Every function here takes the sampling settings as one checked SampleConfig.
"""

from __future__ import annotations

import resource
from typing import Callable

import torch

from paris.config import SampleConfig
from paris.errors import ParisError
from paris.flow import euler_step, time_grid
from paris.inference.mixture import Mixture
from paris.inference.velocity import encode_prompts, velocity_field

Generators = torch.Generator | list[torch.Generator]  # one for the batch, or one per image


def timesteps(steps: int, shift: float = 1.0) -> list[float]:
    """steps+1 times from 1 to 0; shift > 1 spends more of them at high noise (SD3's time shift)."""
    t = time_grid(steps)
    return (shift * t / (1 + (shift - 1) * t)).tolist()


def integrate(velocity: Callable[[torch.Tensor, float], torch.Tensor], x: torch.Tensor, sample: SampleConfig,
              on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """x at t=0 from x at t=1, in `sample.steps` steps of `sample.sampler`; `on_step(i)` after step i."""
    times = timesteps(sample.steps, sample.shift)
    for step, (t, t_next) in enumerate(zip(times[:-1], times[1:]), start=1):
        v = velocity(x, t)
        if sample.sampler == "heun" and t_next > 0:  # Heun: average the slopes at both ends (last step stays Euler)
            v = (v + velocity(euler_step(x, v, t, t_next), t_next)) / 2
        x = euler_step(x, v, t, t_next)
        if on_step is not None:
            on_step(step)
    return x


@torch.no_grad()
def generate(mixture: Mixture, prompts: list[str], sample: SampleConfig, negative_prompts: list[str] | None = None,
             noise: torch.Tensor | None = None, generator: Generators | None = None, trace: bool = False,
             on_step: Callable[[int], None] | None = None, decode: bool = True) -> tuple[torch.Tensor, dict]:
    """Images [len(prompts), C, H, W] in [-1, 1] (without `decode`: the latents), and statistics (expert and router
    passes, peak memory, the most bytes the resident experts held, routing trace if asked).

    `noise`: the latents at t=1; by default drawn from `generator` (one, or one per image), by default one seeded
    with `sample.seed`. The (first) generator also draws the choices of stochastic routing rules.
    `negative_prompts`: see paris.inference.velocity.encode_prompts."""
    generator, router_generator = generators(sample, generator)
    routing = [] if trace else None
    cond = encode_prompts(mixture, prompts, negative_prompts)
    velocity = velocity_field(mixture, cond, sample, router_generator, routing)
    x = initial_noise(mixture, len(prompts), generator) if noise is None else noise.to(mixture.experts.device)
    x = integrate(velocity, x, sample, on_step).float().cpu()
    stats = {"expert_passes_per_image": mixture.stats["expert_passes"] / len(prompts) / sample.steps,
             "forward_passes_per_image": mixture.stats["forward_passes"] / len(prompts) / sample.steps,
             "router_calls_per_step": mixture.stats["router_calls"] / sample.steps,
             "peak_memory_mib": peak_memory_mib(mixture.experts.device),
             "resident_expert_bytes": mixture.experts.peak_resident_bytes}  # the most, while sampling
    if trace:
        stats["routing"] = torch.stack(routing).transpose(0, 1)  # [B, evaluations, K]
    return mixture.autoencoder.decode(x) if decode else x, stats


def generators(sample: SampleConfig, generator: Generators | None) -> tuple[Generators, torch.Generator]:
    """The generator(s) of the initial noise (`generator`, by default one seeded with `sample.seed`), and the one
    that draws the choices of stochastic routing rules: the first of a list."""
    generator = torch.Generator().manual_seed(sample.seed) if generator is None else generator
    return generator, generator[0] if isinstance(generator, list) else generator


def initial_noise(mixture: Mixture, n: int, generator: Generators) -> torch.Tensor:
    """x at t=1: n latents of standard noise, drawn on the CPU (the same on every device) from `generator`, or
    each from its own generator of a list of n."""
    if isinstance(generator, list):
        if len(generator) != n:
            raise ParisError(f"a list of generators needs one per image ({n}); got {len(generator)}")
        return torch.cat([initial_noise(mixture, 1, one) for one in generator])
    return torch.randn(n, *mixture.latent_shape, generator=generator).to(mixture.experts.device)


def peak_memory_mib(device: torch.device) -> float:
    """The GPU memory peak since the last reset; on CPU, this process's peak resident memory so far."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:  # VmHWM starts afresh at exec; ru_maxrss would carry over the peak of the parent that forked us
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except OSError:  # not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # macOS reports bytes
