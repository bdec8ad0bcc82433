"""Held-out flow loss: how well a strategy's velocity field denoises real images that no model trained on.

FID scores whole sampling trajectories, and two trainings of one recipe can differ by a few points of it. This
scores what training optimises, |v(x_t, t, caption) - (noise - x0)|^2, on the evaluation's reference images, at
a fixed grid of t, without guidance, with the router choosing the experts as it does when sampling. The noise
comes from a fixed seed, so every strategy and every run sees the same x_t: two systems' figures are paired,
and a difference far smaller than FID can resolve still shows.
"""

from __future__ import annotations

import torch

from paris.config import SampleConfig
from paris.flow import interpolate
from paris.progress import bar
from paris.inference.mixture import Mixture
from paris.inference.velocity import encode_prompts, velocity_field

TIMES = tuple((i + 0.5) / 10 for i in range(10))  # the midpoints of ten equal bins of t: their mean is a uniform t


@torch.no_grad()
def held_out_loss(mixture: Mixture, strategy: str, images: torch.Tensor, prompts: list[str], seed: int,
                  batch_size: int) -> dict:
    """{"held_out_loss": the mean over TIMES, "held_out_loss_by_t": {t: loss}}; the loss is the mean squared
    error per latent element, as in training. The noise of the batch starting at image i is drawn with seed + i,
    so with one batch size every strategy gets the same noise."""
    sums = dict.fromkeys(TIMES, 0.0)
    device = mixture.experts.device
    with bar(f"held-out loss: {strategy}", len(prompts), unit="images") as progress:
        for i in range(0, len(prompts), batch_size):
            x0 = mixture.autoencoder.encode(images[i : i + batch_size]).float()
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + i))
            target = (noise - x0).to(device)
            # Guidance 1 is the conditional velocity alone: the model as trained, with its caption.
            cond = encode_prompts(mixture, prompts[i : i + batch_size])
            velocity = velocity_field(mixture, cond, SampleConfig(strategy=strategy, guidance=1.0))
            for t in TIMES:
                v = velocity(interpolate(x0, noise, torch.full((len(x0),), t)).to(device), t)
                sums[t] += (v - target).pow(2).flatten(1).mean(1).sum().item()
            progress.update(advance=len(x0))
    by_t = {f"{t:g}": total / len(prompts) for t, total in sums.items()}
    return {"held_out_loss": sum(by_t.values()) / len(by_t), "held_out_loss_by_t": by_t}
