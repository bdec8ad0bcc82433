"""Int8 experts (sample.quantize, paris.models.quantize) and the bytes resident experts hold (paris.models.resident),
on tiny random experts saved to disk and loaded back as a user loads them."""

from __future__ import annotations

import dataclasses
import logging
import re
import sys

import pytest
import torch
from testkit.runs import copy_run, randomize_zero_params, run_cli, with_expert

from paris import layout
from paris.config import DiTConfig
from paris.errors import ParisError
from paris.inference.mixture import ExpertPool
from paris.inference.pipeline import ParisPipeline
from paris.models.dit import DiT
from paris.models.io import load_pretrained, save_pretrained, weights_file
from paris.models.quantize import quantization_of, quantized
from paris.models.resident import resident_bytes
from paris.run import RunDir
from paris.serve.engine import Engine
from paris.train.expert import train_expert

PROMPTS = ["a photo of a bag", "a photo of a shoe"]
STEPS = 4


def _latents(pipe: ParisPipeline, seed: int = 0, **settings) -> tuple[torch.Tensor, dict]:
    return pipe.generate(PROMPTS, steps=STEPS, seed=seed, decode=False, **settings)


@pytest.mark.parametrize("quantize", ["int8", "int8-dynamic"])
def test_int8_sampling_stays_close_to_fp32(three_experts, quantize):
    """The int8 images differ from the fp32 ones by a small share of what another seed changes."""
    fp32, _ = _latents(ParisPipeline.from_pretrained(str(three_experts)))
    other_seed, _ = _latents(ParisPipeline.from_pretrained(str(three_experts)), seed=1)
    pipe = ParisPipeline.from_pretrained(str(three_experts), quantize=quantize)
    int8, stats = _latents(pipe)
    assert all(quantization_of(model) == quantize for model in pipe.mixture.experts.resident.values())
    error, spread = (int8 - fp32).norm() / fp32.norm(), (other_seed - fp32).norm() / fp32.norm()
    assert 0 < error < 0.03 and error < spread / 20, (error, spread)
    assert stats["resident_expert_bytes"] == sum(resident_bytes(m) for m in pipe.mixture.experts.resident.values())


def test_an_int8_expert_holds_under_0_3_of_its_fp32_bytes(tmp_path):
    """A DiT whose linear layers hold nearly all its weights, saved and loaded back: int8 data and scales are
    counted, not the fp32 size the quantised weights report."""
    run = RunDir(str(tmp_path))
    config = DiTConfig(input_size=8, in_channels=1, patch_size=2, hidden_size=256, depth=2, num_heads=4, text_dim=64)
    save_pretrained(run, "expert", randomize_zero_params(DiT(config), seed=0, std=0.02))
    fp32 = resident_bytes(load_pretrained(run, "expert"))
    model = quantized(load_pretrained(run, "expert"), "int8")
    plain = load_pretrained(run, "expert")
    assert fp32 == sum(t.numel() * 4 for t in [*plain.parameters(), *plain.buffers()])  # the position table too
    with torch.device("meta"):  # what benchmarks/int8.py measures an XL/2 expert on: no memory, the same bytes
        assert resident_bytes(DiT(config)) == fp32
    assert resident_bytes(model) <= 0.3 * fp32, resident_bytes(model) / fp32
    reported = sum(t.numel() * t.element_size() for t in model.parameters())  # what the subclass claims to be
    assert reported > 0.9 * fp32  # why resident_bytes looks inside the quantised tensors


def test_the_pool_reloads_the_trained_weights_when_quantize_goes_back_to_none(three_experts):
    pipe = ParisPipeline.from_pretrained(str(three_experts))
    fp32, fp32_stats = _latents(pipe)
    int8, int8_stats = _latents(pipe, quantize="int8")
    again, _ = _latents(pipe)
    assert not torch.equal(int8, fp32) and torch.equal(again, fp32)
    assert 0 < int8_stats["resident_expert_bytes"] < 0.5 * fp32_stats["resident_expert_bytes"]
    assert pipe.mixture.experts.quantize == "none"


def test_a_server_quantizes_for_every_request_and_shows_its_resident_bytes(three_experts, caplog):
    from fastapi.testclient import TestClient

    from paris.serve.app import create_app

    engine = Engine(ParisPipeline.from_pretrained(str(three_experts), quantize="int8"))
    with caplog.at_level(logging.INFO, logger="paris.serve"):
        assert engine.submit(PROMPTS[0], steps=2).finished.result(timeout=120).status == "done"
    pool = engine.pipe.mixture.experts
    expected = sum(resident_bytes(model) for model in pool.resident.values())
    with TestClient(create_app(engine, "pipeline")) as client:
        for route in ("/healthz", "/api/info"):
            shown = client.get(route).json()
            assert (shown["resident_expert_bytes"], shown["quantize"]) == (expected, "int8") and expected > 0
    assert f"experts resident: {expected / 2**20:.1f} MiB at most, {len(pool.resident)} of 3 experts loaded " \
           "(quantize int8)" in caplog.text
    with pytest.raises(ParisError, match=re.escape("quantize is set for the whole server (int8, by paris serve "
                                                   "--quantize); a request cannot change it")):
        engine.submit(PROMPTS[0], steps=2, quantize="none")


def test_a_diffusers_pipeline_quantizes_in_place_and_refuses_to_save_int8_weights(three_experts, tmp_path):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(three_experts), trust_remote_code=True)
    pipe(PROMPTS[0], num_inference_steps=2, quantize="int8")
    assert pipe.quantized_as() == "int8"
    pipe(PROMPTS[0], num_inference_steps=2)  # later calls keep it
    with pytest.raises(ParisError, match="already int8, which cannot be undone"):
        pipe(PROMPTS[0], num_inference_steps=2, quantize="none")
    with pytest.raises(ParisError, match="save the pipeline as loaded"):
        pipe.save_pretrained(str(tmp_path / "saved"))


def test_what_int8_cannot_do_here_is_one_line(three_experts, monkeypatch):
    with pytest.raises(ParisError, match=re.escape("quantize int8 runs on cpu or cuda, not mps")):
        ExpertPool([], device="mps").use_quantization("int8")
    with pytest.raises(ParisError, match=re.escape("leave out --offload or --quantize")):  # its host copies are fp32
        ExpertPool([], max_resident=1, device="cuda", offload=True).use_quantization("int8")
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # what an environment without torchao imports
    with pytest.raises(ParisError, match=re.escape("quantize needs torchao")):
        ParisPipeline.from_pretrained(str(three_experts), quantize="int8")


def test_the_command_line_shows_int8_resident_memory_and_none_of_torchaos_import_noise(three_experts, tmp_path):
    """A fresh process, as a user runs it: torchao and diffusers log warnings as torchao is imported; none shows."""
    result = run_cli("generate", str(three_experts), "-p", PROMPTS[0], "--steps", "1", "--quantize", "int8",
                     "--out", str(tmp_path / "bag.png"))
    assert result.returncode == 0, result.stderr
    assert re.search(r"of which experts \d+\.\d MiB resident, int8\)", result.stdout), result.stdout
    for noise in ("torchao", "Failed to load", "Enum subclass"):
        assert noise not in result.stderr, result.stderr


def test_training_previews_never_quantize_the_weights_being_trained(partitioned, tmp_path, config):
    """A run whose sample config asks for int8 previews its expert in fp32: int8 is done in place, and the preview
    samples with the very EMA weights that training goes on with."""
    trained = {}
    for quantize in ("none", "int8"):
        run = copy_run(partitioned, tmp_path / quantize)
        job = with_expert(config, steps=4, preview_every=2, preview_prompts=PROMPTS[:1])
        train_expert(run, dataclasses.replace(job, sample=dataclasses.replace(job.sample, quantize=quantize)), 0)
        trained[quantize] = run.read_bytes(weights_file(run, layout.final(layout.expert(0))))
    assert trained["int8"] == trained["none"]
