"""Sampling from the mixture of experts: Euler from t=1 to t=0, the router picks the experts at every step.

At each step the router runs once on (x_t, t); the routing rule turns its probabilities into expert
weights; each expert with a non-zero weight runs once, on the sub-batch of samples that use it, with
classifier-free guidance applied to EACH expert before mixing (Paris):
    v_k = v_k(empty) + s * (v_k(text) - v_k(empty))          v = sum_k w_k v_k
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from paris.data.encoders import TextEncoder, build_autoencoder, build_text_encoder
from paris.errors import ParisError
from paris.flow import euler_step, time_grid
from paris.models.dit import DiT
from paris.models.io import load_pretrained
from paris.models.router import Router
from paris.routing import check_strategy, routing_weights
from paris.run import RunDir


@dataclass
class Mixture:
    experts: list[DiT]
    router: Router
    text_encoder: TextEncoder
    autoencoder: object


def load_mixture(run: RunDir) -> Mixture:
    """Load every expert's final weights, the router and the encoders of a run."""
    config = run.read_config()
    num_experts = run.read_json("partition/meta.json")["num_clusters"]
    experts = [load_pretrained(run, f"experts/{k}/final") for k in range(num_experts)]
    router = load_pretrained(run, "router/final")
    if router.config.num_experts != num_experts:
        raise ParisError(f"the router was trained for {router.config.num_experts} experts but the run has "
                         f"{num_experts}; retrain it with `paris train-router {run.url}`")
    d = config.data
    return Mixture(experts, router, build_text_encoder(d.text_encoder, d.text_encoder_path, d.max_tokens),
                   build_autoencoder(d.autoencoder, d.autoencoder_path, d.latent_scale))


@torch.no_grad()
def generate(mixture: Mixture, prompts: list[str], strategy: str = "top2", steps: int = 50,
             guidance: float = 7.5, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """Images [len(prompts), C, H, W] in [-1, 1], and counts of expert forward passes."""
    if not prompts:
        raise ParisError("no prompts given; pass at least one --prompt")
    check_strategy(strategy)
    text, mask = mixture.text_encoder.encode(prompts)
    null_text, null_mask = mixture.text_encoder.encode([""])
    config = mixture.experts[0].config
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(prompts), config.in_channels, config.input_size, config.input_size, generator=generator)
    router_text = {"text": text, "text_mask": mask} if mixture.router.config.text_dim else {}
    expert_passes = 0
    times = time_grid(steps).tolist()
    for t, t_next in zip(times[:-1], times[1:]):
        t_batch = torch.full((len(x),), t)
        weights = routing_weights(mixture.router(x, t_batch, **router_text).softmax(-1), strategy)
        v = torch.zeros_like(x)
        for k, expert in enumerate(mixture.experts):
            rows = weights[:, k].nonzero().squeeze(1)
            if len(rows) == 0:
                continue
            v_k = guided_velocity(expert, x[rows], t_batch[rows], text[rows], mask[rows], null_text, null_mask, guidance)
            v[rows] += weights[rows, k].view(-1, 1, 1, 1) * v_k
            expert_passes += len(rows)
        x = euler_step(x, v, t, t_next)
    return mixture.autoencoder.decode(x), {"expert_passes_per_image": expert_passes / len(prompts) / steps}


def guided_velocity(model, x, t, text, mask, null_text, null_mask, scale: float) -> torch.Tensor:
    """Classifier-free guidance; the conditional and unconditional passes run as one batch."""
    n = len(x)
    v = model(torch.cat([x, x]), torch.cat([t, t]),
              torch.cat([text, null_text.expand(n, -1, -1)]), torch.cat([mask, null_mask.expand(n, -1)]))
    v_text, v_empty = v.chunk(2)
    return v_empty + scale * (v_text - v_empty)
