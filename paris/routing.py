"""Routing rules: from the router's probabilities p(k | x_t, t) to the weight of each expert's velocity.

    top1:  all weight on the most likely expert            (DDM's best)
    top2:  the two most likely, weights p_k / (p_a + p_b)  (Paris's best)
    full:  every expert, weight p_k                        (the exact decentralized flow)
"""

from __future__ import annotations

import torch

from paris.errors import ParisError

STRATEGIES = ("top1", "top2", "full")


def top_k_weights(probs: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest probabilities of each row, renormalised to sum to 1; zeros elsewhere."""
    if not 1 <= k <= probs.shape[1]:
        raise ParisError(f"top-{k} needs between 1 and {probs.shape[1]} experts")
    values, index = probs.topk(k, dim=1)
    return torch.zeros_like(probs).scatter(1, index, values / values.sum(1, keepdim=True))


def routing_weights(probs: torch.Tensor, strategy: str) -> torch.Tensor:
    """[B, K] expert weights for [B, K] router probabilities; each row sums to 1."""
    if check_strategy(strategy) == "top1":
        return top_k_weights(probs, 1)
    if strategy == "top2":
        return top_k_weights(probs, min(2, probs.shape[1]))
    return probs / probs.sum(1, keepdim=True)


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ParisError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    return strategy
