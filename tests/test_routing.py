"""Routing rules on hand-made router probabilities, checked against exact numbers."""

from __future__ import annotations

import pytest
import torch

from paris.errors import ParisError
from paris.routing import STRATEGIES, check_strategy, routing_weights, top_k_weights

PROBS = torch.tensor([
    [0.1, 0.6, 0.3, 0.0],
    [0.5, 0.2, 0.05, 0.25],
    [0.25, 0.25, 0.4, 0.1],
])


def test_top1_is_one_hot_argmax():
    expected = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]], dtype=torch.float32)
    assert torch.equal(routing_weights(PROBS, "top1"), expected)


def test_top2_keeps_two_largest_renormalised():
    expected = torch.tensor([
        [0.0, 0.6 / 0.9, 0.3 / 0.9, 0.0],
        [0.5 / 0.75, 0.0, 0.0, 0.25 / 0.75],
        [0.0, 0.25 / 0.65, 0.4 / 0.65, 0.0],  # tie 0.25/0.25: either one, see below
    ])
    weights = routing_weights(PROBS, "top2")
    assert torch.allclose(weights[:2], expected[:2], atol=1e-6)
    # Row 3 has a tie for second place: the larger (0.4) must be kept, plus exactly one of the tied pair.
    row = weights[2]
    assert row[2].item() == pytest.approx(0.4 / 0.65) and row[3].item() == 0.0
    assert sorted(row[:2].tolist()) == pytest.approx([0.0, 0.25 / 0.65])


def test_full_is_the_probabilities():
    assert torch.allclose(routing_weights(PROBS, "full"), PROBS)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_rows_sum_to_one_and_are_nonnegative(strategy):
    probs = torch.randn(32, 8, generator=torch.Generator().manual_seed(0)).softmax(-1)
    weights = routing_weights(probs, strategy)
    assert weights.shape == probs.shape
    assert torch.allclose(weights.sum(1), torch.ones(32), atol=1e-6)
    assert (weights >= 0).all()
    assert ((weights > 0).sum(1) == {"top1": 1, "top2": 2, "full": 8}[strategy]).all()


def test_top2_with_one_expert_is_top1():
    probs = torch.ones(3, 1)
    assert torch.equal(routing_weights(probs, "top2"), torch.ones(3, 1))


def test_top_k_bounds():
    with pytest.raises(ParisError):
        top_k_weights(PROBS, 0)
    with pytest.raises(ParisError):
        top_k_weights(PROBS, 5)
    assert torch.allclose(top_k_weights(PROBS, 4), PROBS)


def test_unknown_strategy():
    with pytest.raises(ParisError, match="'top3'"):
        routing_weights(PROBS, "top3")
    with pytest.raises(ParisError, match="top1, top2, full"):
        check_strategy("nucleus")
