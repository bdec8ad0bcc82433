"""Flow matching, the whole of it. Data at t=0, noise at t=1, a straight line between them.

    x_t = (1 - t) * x0 + t * noise        velocity target  v = noise - x0        loss = |v_theta(x_t, t) - v|^2
Sampling integrates dx/dt = v from t=1 (noise) down to t=0 (data) with Euler steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from paris.errors import ParisError

T_DISTRIBUTIONS = ("logit-normal", "uniform")


def sample_t(distribution: str, random) -> torch.Tensor:
    """Training times in (0, 1), one per sample of `random` (paris.randomness).

    Logit-normal (SD3) spends more steps in the middle, where learning is hardest.
    """
    if distribution == "logit-normal":
        return torch.sigmoid(random.normal())
    if distribution == "uniform":
        return random.uniform()
    raise ParisError(f"unknown t distribution {distribution!r}; choose one of {', '.join(T_DISTRIBUTIONS)}")


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    t = t.view(-1, *([1] * (x0.dim() - 1)))
    return (1 - t) * x0 + t * noise


def noisy_sample(x0: torch.Tensor, distribution: str, random):
    """(x_t, t, noise) for a batch of clean latents; `random` draws one t and one noise per sample."""
    t = sample_t(distribution, random).to(x0.device)
    noise = random.normal(*x0.shape[1:]).to(x0.device, x0.dtype)
    return interpolate(x0, noise, t), t, noise


def flow_matching_loss(model, x0, distribution: str, random, **cond) -> torch.Tensor:
    x_t, t, noise = noisy_sample(x0, distribution, random)
    return F.mse_loss(model(x_t, t, **cond).float(), (noise - x0).float())


def time_grid(steps: int) -> torch.Tensor:
    """steps+1 times from 1 down to 0."""
    if steps < 1:
        raise ParisError(f"the number of sampling steps must be at least 1, got {steps}")
    return torch.linspace(1, 0, steps + 1)


def euler_step(x: torch.Tensor, v: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
    return x + (t_next - t) * v
