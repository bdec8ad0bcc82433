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
Memory: `quantize` holds the experts' linear layers in int8 (paris.models.quantize); the router stays as trained,
as its choice of experts is discrete and it is one network whatever K.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from paris.config import SampleConfig, lora_strengths
from paris.errors import ParisError
from paris.inference.lora_experts import check_strengths
from paris.inference.mixture import ExpertUnavailable, Mixture, retire
from paris.inference.routing import Strategy, parse_strategy, routing_weights, without_small
from paris.models.layers import attention_mask
from paris.models.lora import set_strength
from paris.precision import sampling_precision


@dataclass
class Conditioning:
    """The encoded prompts and negative prompts, one row per image, on the mixture's device. The masks are None
    where every token is attended. `scale`: a guidance scale per image (distillation draws one per sample);
    None: the sampling settings' one for all. `plain_negative`: the negative prompt is the empty one."""

    text: torch.Tensor
    mask: torch.Tensor | None
    negative: torch.Tensor
    negative_mask: torch.Tensor | None
    scale: torch.Tensor | None = None
    plain_negative: bool = True

    def rows(self, rows: torch.Tensor) -> "Conditioning":
        pick = lambda tensor: None if tensor is None else tensor[rows]  # noqa: E731
        return Conditioning(pick(self.text), pick(self.mask), pick(self.negative), pick(self.negative_mask),
                            pick(self.scale), self.plain_negative)

    def guidance(self, default: float) -> float | torch.Tensor:
        """The guidance scale of every row: `default`, or this conditioning's own per row as [B, 1, 1, 1]."""
        return default if self.scale is None else self.scale.view(-1, 1, 1, 1)


def conditioning(text, mask, negative, negative_mask, device, scale: torch.Tensor | None = None,
                 plain_negative: bool = True) -> Conditioning:
    """Encoded prompts and negatives on `device`, the masks dropped where every token is attended (checked here,
    on the CPU: SDPA keeps its fastest kernel without one)."""
    if attention_mask(torch.cat([mask, negative_mask])) is None:
        mask = negative_mask = None
    to = lambda tensor: None if tensor is None else tensor.to(device)  # noqa: E731
    return Conditioning(to(text), to(mask), to(negative), to(negative_mask), to(scale), plain_negative)


def encode_prompts(mixture: Mixture, prompts: list[str], negative_prompts: list[str] | None = None) -> Conditioning:
    """`negative_prompts`: one per prompt, or one for all; None: the empty prompt (plain classifier-free guidance)."""
    if not prompts:
        raise ParisError("no prompts given; pass at least one --prompt")
    plain = not negative_prompts or set(negative_prompts) == {""}
    negative_prompts = negative_prompts or [""]
    if len(negative_prompts) not in (1, len(prompts)):
        raise ParisError(f"give one negative prompt, or one per prompt ({len(prompts)}); got {len(negative_prompts)}")
    if len(set(negative_prompts)) == 1:  # encoded once: the same rows whether given once or per prompt
        negative_prompts = negative_prompts[:1]
    text, mask = mixture.text_encoder.encode(prompts)
    negative, negative_mask = mixture.text_encoder.encode(negative_prompts)
    negative, negative_mask = negative.expand(len(prompts), -1, -1), negative_mask.expand(len(prompts), -1)
    return conditioning(text, mask, negative, negative_mask, mixture.experts.device, plain_negative=plain)


def velocity_field(mixture: Mixture, cond: Conditioning, sample: SampleConfig, generator: torch.Generator | None = None,
                   routing: list | None = None) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """v(x, t): the guided velocity of the mixture for these prompts, for any ODE solver to integrate (t: one time
    for the batch, or one per row). Counts its passes in `mixture.stats` (reset here): expert_passes, an expert
    on one image, its guided pair counted once; forward_passes, an image through a network, the negative
    prompt's pass apart. Appends each evaluation's weights to `routing` if given. The experts load as
    `sample.quantize` says; the peak of their resident bytes is measured from here (ExpertPool.reset_peak).
    v is fp32 whatever `sample.precision` the networks run in."""
    num_experts = len(mixture.experts)
    strategy = parse_strategy(sample.strategy, num_experts, mixture.retired)  # known only now: K, the retired
    check_strengths(sample.lora_scale, num_experts, mixture.lora_experts)
    if mixture.router is None and num_experts != 1 and strategy.rule != "oracle":
        raise ParisError(f"a mixture of {num_experts} experts needs a router")
    device = mixture.experts.device
    mixture.experts.use_quantization(sample.quantize)
    mixture.experts.reset_peak()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    routed, evaluations = {}, 0  # routed: the last router call's weights (text, negative prompt)
    mixture.stats.update(expert_passes=0, forward_passes=0, router_calls=0)
    guide_after_routing_negative = (sample.guidance_mode == "after" and mixture.router is not None
                                    and mixture.router.architecture.text_dim)

    def route(x, t: float | torch.Tensor):
        weigh = lambda text, mask: expert_weights(mixture, x, t, text, mask, strategy, sample.min_weight, generator)  # noqa: E731
        routed["text"] = routed["negative"] = weigh(cond.text, cond.mask)
        if guide_after_routing_negative:
            routed["negative"] = weigh(cond.negative, cond.negative_mask)

    @torch.no_grad()
    def velocity(x, t: float | torch.Tensor):
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


def expert_weights(mixture: Mixture, x, t: float | torch.Tensor, text, mask, strategy: Strategy, min_weight: float,
                   generator) -> torch.Tensor:
    """[B, K] weights of the experts for x at t: the router's probabilities (retired experts' shared out) through
    the routing rule, then experts weighing less than `min_weight` skipped. The oracle rule names its expert: the
    router is not asked."""
    if strategy.rule == "oracle":
        return routing_weights(torch.ones(len(x), len(mixture.experts)), strategy).to(x.device)
    if mixture.router is None:
        return torch.ones(len(x), 1, device=x.device)
    router_text = {"text": text, "text_mask": mask} if mixture.router.architecture.text_dim else {}
    mixture.stats["router_calls"] += 1
    probs = mixture.router(x, batch_times(t, x), **router_text).float().softmax(-1).cpu()
    if mixture.retired:
        probs[:, sorted(mixture.retired)] = 0
        probs = probs / probs.sum(1, keepdim=True)
    return without_small(routing_weights(probs, strategy, generator), min_weight).to(x.device)


def batch_times(t: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """t as one time per row of x: sampling integrates the batch at one time, distillation draws one per sample."""
    return t.to(x.device) if torch.is_tensor(t) else torch.full((len(x),), t, device=x.device)


def mixed_velocity(mixture: Mixture, x, t: float | torch.Tensor, weights, negative_weights, cond: Conditioning,
                   sample: SampleConfig) -> torch.Tensor:
    """sum_k w_k v_k over the experts that some sample uses; each runs once on its own sub-batch. With `compile`
    through torch.compile, whose compiled code is kept with the DiT class: every expert of one shape reuses it.
    At guidance 1 the velocity is the conditional one in both modes, so the unconditional pass is not run; a
    guidance-distilled expert (DiTConfig.guidance_range) draws its guided velocity in one pass."""
    v_text, v_negative, times = torch.zeros_like(x), torch.zeros_like(x), batch_times(t, x)
    unguided = sample.guidance == 1 and cond.scale is None
    after = sample.guidance_mode == "after" and not unguided
    either = weights > 0 if unguided else (weights > 0) | (negative_weights > 0)
    used = [k for k in range(weights.shape[1]) if either[:, k].any()]
    resident_first = sorted(used, key=lambda k: k not in mixture.experts.resident)  # fewer loads under a cap
    strengths = lora_strengths(sample.lora_scale)
    for k in resident_first:
        rows = either[:, k].nonzero().squeeze(1)
        w, w_negative = weights[rows, k].view(-1, 1, 1, 1), negative_weights[rows, k].view(-1, 1, 1, 1)
        model, part = mixture.experts[k], cond.rows(rows)
        if k in mixture.lora_experts:  # set at every pass: the same loaded expert serves calls of other strengths
            set_strength(model, strengths.get(k, 1.0))
        expert = torch.compile(model) if sample.compile else model
        mixture.stats["expert_passes"] += len(rows)
        if model.architecture.guidance_range is not None:
            v = guided_in_one_pass(expert, x[rows], times[rows], part, sample.guidance)
            mixture.stats["forward_passes"] += len(rows)
            v_text[rows] += w * v
            v_negative[rows] += w * v  # guide(a + f, b + f) = guide(a, b) + f: "after" leaves it as it is
            continue
        if unguided:
            mixture.stats["forward_passes"] += len(rows)
            v_text[rows] += w * expert(x[rows], times[rows], part.text, part.mask)
            continue
        mixture.stats["forward_passes"] += 2 * len(rows)  # the negative prompt's half of the batched pass too
        vt, vn = conditional_velocities(expert, x[rows], times[rows], part)
        if after:
            v_text[rows] += w * vt
            v_negative[rows] += w_negative * vn
        else:
            v_text[rows] += w * guide(vt, vn, part.guidance(sample.guidance))
    return guide(v_text, v_negative, cond.guidance(sample.guidance)) if after else v_text


def guided_in_one_pass(model, x, t, cond: Conditioning, default_scale: float) -> torch.Tensor:
    """The guided velocity of a guidance-distilled model, which takes the scale as an input and was trained
    against the empty prompt only (paris distill --guidance-distill)."""
    low, high = model.architecture.guidance_range
    if not cond.plain_negative:
        raise ParisError("this model was distilled with guidance against the empty prompt and guides in one pass, "
                         "so it cannot take a negative prompt; leave it out, or distil a student without "
                         "--guidance-distill")
    if cond.scale is None and not low <= default_scale <= high:
        raise ParisError(f"this model was distilled for guidance scales in [{low:g}, {high:g}]; choose a guidance "
                         f"scale in that range, not {default_scale:g}")
    scale = torch.full((len(x),), float(default_scale), device=x.device) if cond.scale is None else cond.scale
    return model(x, t, cond.text, cond.mask, guidance=scale)


def conditional_velocities(model, x, t, cond: Conditioning):
    """(v(text), v(negative)) of one model from one batched forward pass; t is a [B] tensor."""
    mask = None if cond.mask is None else torch.cat([cond.mask, cond.negative_mask])
    v = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond.text, cond.negative]), mask)
    return v.chunk(2)


def guide(v_text: torch.Tensor, v_negative: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: v(negative) + s (v(text) - v(negative))."""
    return v_negative + scale * (v_text - v_negative)
