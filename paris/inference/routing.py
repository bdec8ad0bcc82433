"""Routing rules: from the router's probabilities p(k | x_t, t) to the weight of each expert's velocity.

    topk       the k most likely experts, weights p_k / sum of the k        (top1: DDM's best; top2: Paris's best)
    full       every expert, weight p_k                  (with min_weight 0, the exact decentralized flow)
    sample-k   k experts drawn from p without replacement, equal weights
    nucleus    the smallest set of most likely experts whose mass reaches p (top-p), renormalised
    threshold  the experts with p_k >= tau, renormalised (the most likely one when none qualifies)
    oracle     a given expert for every sample (its true cluster)
A strategy is written as a name with an optional parameter: top1, top2, topk:3, sample-k:2, nucleus:0.9,
threshold:0.2, oracle:3, full. Every rule returns [B, K] weights whose rows sum to 1.

After the rule, `without_small` skips the experts whose weight is below `sample.min_weight`: a pass that would
move the velocity by a negligible share costs as much as any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection

import torch

from paris.errors import ParisError, shown

STRATEGIES = ("top1", "top2", "topk:K", "full", "sample-k:K", "nucleus:P", "threshold:TAU", "oracle:EXPERT")


@dataclass(frozen=True)
class Strategy:
    rule: str  # topk, full, sample-k, nucleus, threshold, oracle
    value: float = 0.0

    def __str__(self) -> str:
        if self.rule == "topk" and self.value in (1, 2):
            return f"top{int(self.value)}"
        return self.rule if self.rule == "full" else f"{self.rule}:{self.value:g}"


def parse_strategy(text: str, num_experts: int | None = None, retired: Collection[int] = ()) -> Strategy:
    """'top2' -> Strategy('topk', 2), 'nucleus:0.9' -> Strategy('nucleus', 0.9); checks the parameter, and that an
    oracle's expert is not one of the `retired` (paris remove-expert, or unavailable) that sampling leaves out."""
    name, _, raw = text.partition(":")
    if name in ("top1", "top2") and not raw:
        name, raw = "topk", name[-1]
    rules = {"topk": int, "sample-k": int, "oracle": int, "nucleus": float, "threshold": float, "full": None}
    if name not in rules or (rules[name] is None) != (raw == ""):
        raise ParisError(f"unknown strategy {shown(text)}; choose one of {', '.join(STRATEGIES)}")
    try:
        value = float(rules[name](raw)) if raw else 0.0  # float: an int beyond float's range is refused here
    except (ValueError, OverflowError):
        raise ParisError(f"strategy {shown(text)} needs a {rules[name].__name__} after the colon") from None
    strategy = Strategy(name, value)
    _check(strategy, num_experts)
    if strategy.rule == "oracle" and int(value) in retired:
        k = int(value)
        raise ParisError(f"{strategy}: expert {k} is retired or unavailable (removed by `paris remove-expert`, or "
                         f"its model is missing or unreadable), so sampling never runs it; choose another expert "
                         f"(a removed one comes back with `paris remove-expert RUN --expert {k} --restore`)")
    return strategy


def _check(s: Strategy, num_experts: int | None) -> None:
    if s.rule in ("topk", "sample-k") and not 1 <= s.value <= (num_experts or s.value):
        raise ParisError(f"{s} needs k between 1 and the number of experts ({num_experts})")
    if s.rule == "oracle" and not 0 <= s.value < (num_experts or s.value + 1):
        raise ParisError(f"{s}: expert {int(s.value)} does not exist (the run has {num_experts})")
    if s.rule in ("nucleus", "threshold") and not 0 < s.value <= 1:
        raise ParisError(f"{s} needs a probability in (0, 1]")


def routing_weights(probs: torch.Tensor, strategy: Strategy | str, generator: torch.Generator | None = None) -> torch.Tensor:
    """[B, K] expert weights for [B, K] router probabilities; each row sums to 1."""
    s = strategy if isinstance(strategy, Strategy) else parse_strategy(strategy, probs.shape[1])
    _check(s, probs.shape[1])
    if s.rule == "topk":
        return top_k_weights(probs, int(s.value))
    if s.rule == "full":
        return probs / probs.sum(1, keepdim=True)
    if s.rule == "sample-k":
        chosen = torch.multinomial(probs, int(s.value), replacement=False, generator=generator)
        return torch.zeros_like(probs).scatter(1, chosen, 1.0 / s.value)
    if s.rule == "nucleus":
        ordered, order = probs.sort(1, descending=True)
        before = ordered.cumsum(1) - ordered  # mass of the more likely experts
        keep = torch.zeros_like(probs, dtype=torch.bool).scatter(1, order, before < s.value)
        return _renormalise(probs * keep)
    if s.rule == "threshold":
        keep = (probs >= s.value) | (probs == probs.max(1, keepdim=True).values)
        return _renormalise(probs * keep)
    return torch.nn.functional.one_hot(torch.full((len(probs),), int(s.value)), probs.shape[1]).to(probs.dtype)


def top_k_weights(probs: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest probabilities of each row, renormalised to sum to 1; zeros elsewhere."""
    values, index = probs.topk(k, dim=1)
    return torch.zeros_like(probs).scatter(1, index, values / values.sum(1, keepdim=True))


def without_small(weights: torch.Tensor, min_weight: float) -> torch.Tensor:
    """`weights` with those below `min_weight` set to 0 (each row's largest always stays), renormalised; a row
    that loses nothing is left exactly as it was."""
    keep = (weights >= min_weight) | (weights == weights.max(1, keepdim=True).values)
    dropped = (~keep & (weights > 0)).any(1, keepdim=True)
    return torch.where(dropped, _renormalise(weights * keep), weights) if dropped.any() else weights


def _renormalise(weights: torch.Tensor) -> torch.Tensor:
    return weights / weights.sum(1, keepdim=True)
