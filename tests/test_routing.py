"""Routing rules on hand-made router probabilities, checked against exact numbers."""

from __future__ import annotations

import pytest
import torch

from paris.errors import ParisError
from paris.inference.routing import Strategy, parse_strategy, routing_weights, top_k_weights

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


COUNTS = {"top1": 1, "top2": 2, "topk:3": 3, "full": 8, "sample-k:2": 2, "oracle:5": 1}


@pytest.mark.parametrize("strategy", [*COUNTS, "nucleus:0.5", "threshold:0.2"])
def test_rows_sum_to_one_and_are_nonnegative(strategy):
    probs = torch.randn(32, 8, generator=torch.Generator().manual_seed(0)).softmax(-1)
    weights = routing_weights(probs, strategy, torch.Generator().manual_seed(1))
    assert weights.shape == probs.shape
    assert torch.allclose(weights.sum(1), torch.ones(32), atol=1e-6)
    assert (weights >= 0).all()
    if strategy in COUNTS:
        assert ((weights > 0).sum(1) == COUNTS[strategy]).all()


def test_nucleus_keeps_the_smallest_set_reaching_p():
    weights = routing_weights(PROBS, "nucleus:0.7")
    # row 1: 0.6 < 0.7, so 0.3 joins; row 2: 0.5 + 0.25 = 0.75; row 3: 0.4 + 0.25 = 0.65 < 0.7, a third joins
    assert torch.allclose(weights[0], torch.tensor([0.0, 0.6, 0.3, 0.0]) / 0.9, atol=1e-6)
    assert torch.allclose(weights[1], torch.tensor([0.5, 0.0, 0.0, 0.25]) / 0.75, atol=1e-6)
    assert torch.allclose(weights[2], torch.tensor([0.25, 0.25, 0.4, 0.0]) / 0.9, atol=1e-6)


def test_threshold_keeps_experts_above_tau_or_the_best():
    weights = routing_weights(PROBS, "threshold:0.3")
    assert torch.allclose(weights[0], torch.tensor([0.0, 0.6, 0.3, 0.0]) / 0.9, atol=1e-6)
    assert torch.allclose(weights[1], torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert torch.allclose(weights[2], torch.tensor([0.0, 0.0, 1.0, 0.0]))
    assert torch.equal(routing_weights(PROBS, "threshold:0.9"), routing_weights(PROBS, "top1"))  # none qualify


def test_oracle_and_sample_k():
    assert torch.equal(routing_weights(PROBS, "oracle:3")[:, 3], torch.ones(3))
    drawn = routing_weights(torch.tensor([[0.0, 0.5, 0.5, 0.0]]).repeat(50, 1), "sample-k:2", torch.Generator().manual_seed(0))
    assert torch.equal(drawn, torch.tensor([[0.0, 0.5, 0.5, 0.0]]).repeat(50, 1))  # only experts with p > 0
    counts = (routing_weights(torch.full((4000, 4), 0.25), "sample-k:1", torch.Generator().manual_seed(0)) > 0).sum(0)
    assert ((counts > 900) & (counts < 1100)).all()  # uniform p: each expert drawn about a quarter of the time


def test_parse_strategy():
    assert parse_strategy("top2") == Strategy("topk", 2) and str(parse_strategy("top2")) == "top2"
    assert parse_strategy("nucleus:0.9") == Strategy("nucleus", 0.9) and str(Strategy("nucleus", 0.9)) == "nucleus:0.9"
    assert str(parse_strategy("full")) == "full"


def test_k_larger_than_the_number_of_experts():
    with pytest.raises(ParisError, match="between 1 and the number of experts"):
        routing_weights(torch.ones(3, 1), "top2")
    with pytest.raises(ParisError, match="between 1 and the number of experts"):
        routing_weights(PROBS, "topk:5")
    with pytest.raises(ParisError, match="expert 4 does not exist"):
        routing_weights(PROBS, "oracle:4")
    assert torch.allclose(top_k_weights(PROBS, 4), PROBS)


@pytest.mark.parametrize("text", ["top3", "nucleus", "full:2", "topk:two", "nucleus:1.5"])
def test_bad_strategies(text):
    with pytest.raises(ParisError, match="strategy|nucleus"):
        parse_strategy(text)


def test_without_small_skips_light_experts_keeps_the_heaviest_and_renormalises():
    from paris.inference.routing import without_small

    weights = torch.tensor([[0.7, 0.25, 0.05], [0.4, 0.35, 0.25], [0.34, 0.33, 0.33]])
    kept = without_small(weights, 0.3)
    assert torch.allclose(kept, torch.tensor([[1.0, 0.0, 0.0], [0.4 / 0.75, 0.35 / 0.75, 0.0], [0.34, 0.33, 0.33]]))
    assert torch.equal(without_small(weights, 0.9), routing_weights(weights, "top1"))  # only the heaviest is left
    assert without_small(weights, 0.0) is weights  # nothing skipped: the very same weights
    assert torch.equal(without_small(weights, 0.3)[2], weights[2])  # a row that loses nothing is not renormalised
