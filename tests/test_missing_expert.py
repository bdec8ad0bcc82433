"""An expert that is missing or unreadable never crashes sampling: one warning line, its router weight
shared by the others, and it is never called again."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

from paris.errors import ParisError
from paris.inference.pipeline import ParisPipeline

PROMPTS = ["a photo of a sneaker", "a photo of a bag", "a photo of a dress"]
SETTINGS = {"strategy": "top2", "steps": 4, "guidance": 3.0, "seed": 0, "trace": True}


@pytest.fixture
def folder(three_experts, tmp_path):
    copy = tmp_path / "pipeline"
    shutil.copytree(three_experts, copy)
    return copy


def _generate(path):
    return ParisPipeline.from_pretrained(str(path)).generate(PROMPTS, **SETTINGS)


def _calls(pipe, k):
    calls = []
    pipe.mixture.experts[k].register_forward_hook(lambda *args: calls.append(1))
    return calls


def test_a_missing_expert_is_retired_with_one_warning_and_never_called(folder, caplog):
    full, full_stats = _generate(folder)
    assert full_stats["routing"][:, :, 1].sum() > 0  # expert 1 takes part when it is there
    shutil.rmtree(folder / "expert_1")
    with caplog.at_level(logging.WARNING, logger="paris"):
        pipe = ParisPipeline.from_pretrained(str(folder))
        images, stats = pipe.generate(PROMPTS, **SETTINGS)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "expert 1 is unavailable" in warnings[0] and "goes on without it" in warnings[0]
    assert stats["routing"][:, :, 1].abs().sum() == 0
    torch.testing.assert_close(stats["routing"].sum(-1), torch.ones(stats["routing"].shape[:2]))
    assert torch.isfinite(images).all() and not torch.equal(images, full)


def test_an_unreadable_expert_is_retired_when_first_needed(folder, caplog):
    (folder / "expert_2" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    pipe = ParisPipeline.from_pretrained(str(folder))
    calls = _calls(pipe, 0)
    with caplog.at_level(logging.WARNING, logger="paris"):
        images, stats = pipe.generate(PROMPTS, **SETTINGS)
    assert 2 in pipe.mixture.retired and stats["routing"][:, :, 2].abs().sum() == 0
    assert sum("expert 2 is unavailable" in r.getMessage() for r in caplog.records) == 1
    assert calls and torch.isfinite(images).all()


def test_what_cannot_degrade_is_one_clear_error(folder):
    shutil.rmtree(folder / "expert_1")
    pipe = ParisPipeline.from_pretrained(str(folder))
    with pytest.raises(ParisError, match="oracle:1: expert 1 is retired or unavailable .* its model is missing"):
        pipe.generate(PROMPTS, strategy="oracle:1", steps=2)
    shutil.rmtree(folder / "expert_0")
    shutil.rmtree(folder / "expert_2")
    with pytest.raises(ParisError, match="no trained model at .*expert_0"):
        ParisPipeline.from_pretrained(str(folder))
