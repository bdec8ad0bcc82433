"""The velocity of the mixture, v(x_t, t), for a batch of prompts: what the integrator (paris.inference.sampler)
integrates.

At each velocity evaluation the router runs once on (x_t, t); a routing rule (paris.inference.routing) turns its
probabilities into expert weights; experts weighing less than `min_weight` are skipped; each expert with a
non-zero weight runs ONCE, on the sub-batch of samples that chose it, its conditional and unconditional passes
batched together (at guidance 1 only the conditional one). Classifier-free guidance is applied to each expert
before mixing (Paris), or to the mixed velocities ("after", for ablations):
    per-expert:  v = sum_k w_k(text) [v_k(neg) + s (v_k(text) - v_k(neg))]
    after:       v = v(neg) + s (v(text) - v(neg)),  with v(c) = sum_k w_k(c) v_k(c)
where neg is the negative prompt, by default the empty one. Guidance is linear, so the two differ only when the
router sees the text (DDM's router): "after" mixes the unconditional velocities with the router's weights for
the negative prompt.

`route_every=n` runs the router on every n-th velocity evaluation only and reuses its weights in between:
next to small experts the router (a B/2 DiT) costs about a third of a guided top-1 step, and the posterior
p(k | x_t, t) changes slowly from one step to the next. n=1 (the paper) routes at every evaluation.

Speed: on CUDA the networks run under bf16 autocast by default (`precision`, paris.precision; fp32 on request,
and always on a CPU, whose images are unchanged). `compile` runs each expert through torch.compile: the first
steps wait for the compilation (a minute or more for XL/2), so it pays on long runs (`paris evaluate`, a server).
Where every text token is attended (CLIP) the experts get no attention mask, which keeps SDPA on its fastest kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from paris.config import SampleConfig
from paris.errors import ParisError
from paris.inference.mixture import ExpertUnavailable, Mixture, retire
from paris.inference.routing import Strategy, parse_strategy, routing_weights, without_small
from paris.models.layers import attention_mask
from paris.precision import sampling_precision


@dataclass
class Conditioning:
    """The encoded prompts and negative prompts, one row per image, on the mixture's device. The masks are None
    where every token is attended."""

    text: torch.Tensor
    mask: torch.Tensor | None
    negative: torch.Tensor
    negative_mask: torch.Tensor | None

    def rows(self, rows: torch.Tensor) -> "Conditioning":
        pick = lambda tensor: None if tensor is None else tensor[rows]  # noqa: E731
        return Conditioning(pick(self.text), pick(self.mask), pick(self.negative), pick(self.negative_mask))


def encode_prompts(mixture: Mixture, prompts: list[str], negative_prompts: list[str] | None = None) -> Conditioning:
    """`negative_prompts`: one per prompt, or one for all; None: the empty prompt (plain classifier-free guidance)."""
    if not prompts:
        raise ParisError("no prompts given; pass at least one --prompt")
    negative_prompts = negative_prompts or [""]
    if len(negative_prompts) not in (1, len(prompts)):
        raise ParisError(f"give one negative prompt, or one per prompt ({len(prompts)}); got {len(negative_prompts)}")
    text, mask = mixture.text_encoder.encode(prompts)
    negative, negative_mask = mixture.text_encoder.encode(negative_prompts)
    negative, negative_mask = negative.expand(len(prompts), -1, -1), negative_mask.expand(len(prompts), -1)
    if attention_mask(torch.cat([mask, negative_mask])) is None:  # checked here, on the CPU
        mask = negative_mask = None
    device = mixture.experts.device
    to = lambda tensor: None if tensor is None else tensor.to(device)  # noqa: E731
    return Conditioning(to(text), to(mask), to(negative), to(negative_mask))


def velocity_field(mixture: Mixture, cond: Conditioning, sample: SampleConfig, generator: torch.Generator | None = None,
                   routing: list | None = None) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """v(x, t): the guided velocity of the mixture for these prompts, for any ODE solver to integrate. Counts
    its passes in `mixture.stats` (reset here) and appends each evaluation's weights to `routing` if given.
    v is fp32 whatever `sample.precision` the networks run in."""
    num_experts = len(mixture.experts)
    if mixture.router is None and num_experts != 1:
        raise ParisError(f"a mixture of {num_experts} experts needs a router")
    strategy = parse_strategy(sample.strategy, num_experts, mixture.retired)  # known only now: K, the retired
    device = mixture.experts.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    routed, evaluations = {}, 0  # routed: the last router call's weights (text, negative prompt)
    mixture.stats.update(expert_passes=0, router_calls=0)
    guide_after_routing_negative = (sample.guidance_mode == "after" and mixture.router is not None
                                    and mixture.router.architecture.text_dim)

    def route(x, t: float):
        weigh = lambda text, mask: expert_weights(mixture, x, t, text, mask, strategy, sample.min_weight, generator)  # noqa: E731
        routed["text"] = routed["negative"] = weigh(cond.text, cond.mask)
        if guide_after_routing_negative:
            routed["negative"] = weigh(cond.negative, cond.negative_mask)

    @torch.no_grad()
    def velocity(x, t: float):
        nonlocal evaluations
        with sampling_precision(sample.precision, device):
            if evaluations % sample.route_every == 0:
                route(x, t)
            evaluations += 1
            while True:
                try:
                    v = mixed_velocity(mixture, x, t, routed["text"], routed["negative"], cond, sample)
                    break
                except ExpertUnavailable as e:  # degrade: go on without it, and route again among the others
                    retire(mixture, e.expert, str(e))
                    route(x, t)
        if routing is not None:
            routing.append(routed["text"].cpu())
        return v

    return velocity


def expert_weights(mixture: Mixture, x, t: float, text, mask, strategy: Strategy, min_weight: float,
                   generator) -> torch.Tensor:
    """[B, K] weights of the experts for x at t: the router's probabilities (retired experts' shared out) through
    the routing rule, then experts weighing less than `min_weight` skipped."""
    if mixture.router is None:
        return torch.ones(len(x), 1, device=x.device)
    router_text = {"text": text, "text_mask": mask} if mixture.router.architecture.text_dim else {}
    mixture.stats["router_calls"] += 1
    probs = mixture.router(x, torch.full((len(x),), t, device=x.device), **router_text).float().softmax(-1).cpu()
    if mixture.retired:
        probs[:, sorted(mixture.retired)] = 0
        probs = probs / probs.sum(1, keepdim=True)
    return without_small(routing_weights(probs, strategy, generator), min_weight).to(x.device)


def mixed_velocity(mixture: Mixture, x, t: float, weights, negative_weights, cond: Conditioning,
                   sample: SampleConfig) -> torch.Tensor:
    """sum_k w_k v_k over the experts that some sample uses; each runs once on its own sub-batch. With `compile`
    through torch.compile, whose compiled code is kept with the DiT class: every expert of one shape reuses it.
    At guidance 1 the velocity is the conditional one in both modes, so the unconditional pass is not run."""
    v_text, v_negative = torch.zeros_like(x), torch.zeros_like(x)
    unguided = sample.guidance == 1
    either = weights > 0 if unguided else (weights > 0) | (negative_weights > 0)
    used = [k for k in range(weights.shape[1]) if either[:, k].any()]
    resident_first = sorted(used, key=lambda k: k not in mixture.experts.resident)  # fewer loads under a cap
    for k in resident_first:
        rows = either[:, k].nonzero().squeeze(1)
        w, w_negative = weights[rows, k].view(-1, 1, 1, 1), negative_weights[rows, k].view(-1, 1, 1, 1)
        t_rows = torch.full((len(rows),), t, device=x.device)
        expert = torch.compile(mixture.experts[k]) if sample.compile else mixture.experts[k]
        mixture.stats["expert_passes"] += len(rows)
        if unguided:
            v_text[rows] += w * expert(x[rows], t_rows, cond.text[rows], None if cond.mask is None else cond.mask[rows])
            continue
        vt, vn = conditional_velocities(expert, x[rows], t_rows, cond.rows(rows))
        if sample.guidance_mode == "per-expert":
            v_text[rows] += w * guide(vt, vn, sample.guidance)
        else:
            v_text[rows] += w * vt
            v_negative[rows] += w_negative * vn
    return v_text if sample.guidance_mode == "per-expert" or unguided else guide(v_text, v_negative, sample.guidance)


def conditional_velocities(model, x, t, cond: Conditioning):
    """(v(text), v(negative)) of one model from one batched forward pass; t is a [B] tensor."""
    mask = None if cond.mask is None else torch.cat([cond.mask, cond.negative_mask])
    v = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond.text, cond.negative]), mask)
    return v.chunk(2)


def guide(v_text: torch.Tensor, v_negative: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: v(negative) + s (v(text) - v(negative))."""
    return v_negative + scale * (v_text - v_negative)
