"""An expert as a LoRA of a finished model (`paris train-expert --lora`): only its adapter trains and is published,
in peft's format; it loads as base + adapter, refusing a changed or missing base; strength 0 is the base exactly;
merged equals unmerged; a stopped job resumes bitwise."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from paris.errors import ParisError
from paris.images import to_pil
from paris.inference.lora_experts import load_expert
from paris.inference.pipeline import ParisPipeline
from paris.models.io import WEIGHTS, load_pretrained
from paris.models.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, PEFT_PREFIX
from paris.run import RunDir
from paris.train.expert import train_expert
from testkit.runs import copy_run, run_in_process, run_paris, with_expert

BASE, LORA = "experts/0/final", "experts/1/final"  # expert 1 is a LoRA of expert 0, a finished expert
PROMPTS = ["a photo of a sneaker", "a photo of a bag"]


def lora_config(config, **changes):
    return with_expert(config, init_from=BASE, lora_rank=4, **changes)


@pytest.fixture(scope="module")
def lora_run(trained, config, tmp_path_factory) -> RunDir:
    """The tiny trained run with expert 1 trained again as a rank-4 LoRA of expert 0."""
    run = copy_run(trained, tmp_path_factory.mktemp("lora") / "run")
    run.remove("experts/1")
    train_expert(run, lora_config(config), 1)
    return run


def inputs(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    arch = model.architecture
    x = torch.randn(3, arch.in_channels, arch.input_size, arch.input_size, generator=g)
    return x, torch.rand(3, generator=g), torch.randn(3, 5, arch.text_dim, generator=g)


def test_only_the_adapter_is_published_and_it_is_small(lora_run):
    files = lora_run.sizes(LORA)
    assert {ADAPTER_WEIGHTS, ADAPTER_CONFIG, "config.json", "manifest.json"} <= files.keys()
    assert WEIGHTS not in files  # the base is not copied
    assert files[ADAPTER_WEIGHTS] * 4 < lora_run.sizes(BASE)[WEIGHTS]
    adapter = lora_run.load_tensors(f"{LORA}/{ADAPTER_WEIGHTS}")
    assert adapter and all(k.startswith(PEFT_PREFIX) and ".lora_" in k for k in adapter)
    assert any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in adapter.items())  # it learned
    manifest = lora_run.read_json(f"{LORA}/manifest.json")
    assert manifest["lora"]["base"] == BASE and manifest["lora"]["rank"] == 4
    assert manifest["lora"]["base_sha256"] == lora_run.sha256(f"{BASE}/{WEIGHTS}")


def test_only_the_adapter_trains_and_the_checkpoint_holds_only_it(lora_run):
    latest = lora_run.read_json("experts/1/LATEST")["path"]
    model = lora_run.load_tensors(f"experts/1/{latest}/model.safetensors")
    assert model and all(".lora_" in k for k in model)
    loaded = load_expert(lora_run, LORA)
    base = load_pretrained(lora_run, BASE).state_dict()
    for key, value in loaded.state_dict().items():
        if ".lora_" not in key:  # every base weight is the base's, bit for bit
            assert torch.equal(value, base[key.replace(".base_layer.", ".")]), key


def test_peft_reads_the_adapter_as_paris_does(lora_run):
    from peft import PeftModel

    ours = load_expert(lora_run, LORA)
    theirs = PeftModel.from_pretrained(load_pretrained(lora_run, BASE), lora_run.path(LORA)).eval()
    x, t, text = inputs(ours)
    with torch.no_grad():  # within float rounding: peft's model batches its adapters' matmuls its own way
        assert (ours(x, t, text) - theirs(x, t, text)).abs().max() < 1e-6


def test_strength_zero_draws_the_base_exactly_and_one_does_not(lora_run):
    pipe = ParisPipeline.from_run(lora_run.url)
    assert pipe.mixture.lora_experts == {1}
    base, _ = pipe.generate(PROMPTS, strategy="oracle:0")
    off, _ = pipe.generate(PROMPTS, strategy="oracle:1", lora_scale="1=0")
    on, _ = pipe.generate(PROMPTS, strategy="oracle:1")
    half, _ = pipe.generate(PROMPTS, strategy="oracle:1", lora_scale="1=0.5")
    assert torch.equal(off, base)
    assert not torch.equal(on, base) and not torch.equal(half, on) and not torch.equal(half, base)
    again, _ = pipe.generate(PROMPTS, strategy="oracle:1")  # a call's strength does not stay with the expert
    assert torch.equal(again, on)


def test_a_lora_expert_samples_in_int8_at_its_strength(lora_run):
    """Quantising holds the base's linears and the adapter's in int8; the strength still scales the adapter alone."""
    pipe = ParisPipeline.from_run(lora_run.url, quantize="int8")
    base, _ = pipe.generate(PROMPTS, strategy="oracle:0")
    off, _ = pipe.generate(PROMPTS, strategy="oracle:1", lora_scale="1=0")
    on, _ = pipe.generate(PROMPTS, strategy="oracle:1")
    full_precision, _ = ParisPipeline.from_run(lora_run.url).generate(PROMPTS, strategy="oracle:1")
    assert torch.equal(off, base) and not torch.equal(on, base)
    assert (on - full_precision).abs().mean() < (on - base).abs().mean()  # int8 is nearer the LoRA than the base


def test_merged_equals_unmerged(lora_run, tmp_path):
    code, out, err = run_paris("merge-lora", lora_run.url, "--expert", "1", "--out", str(tmp_path / "merged"))
    assert code == 0, err
    merged, lora = load_pretrained(RunDir(str(tmp_path / "merged")), ""), load_expert(lora_run, LORA)
    x, t, text = inputs(lora)
    with torch.no_grad():
        assert (merged(x, t, text) - lora(x, t, text)).abs().max() < 1e-5
        assert (merged.blocks[0].attn.q.weight - load_pretrained(lora_run, BASE).blocks[0].attn.q.weight).abs().max() > 0


def test_a_pipeline_folder_holds_the_lora_expert_merged(lora_run, tmp_path):
    pipe = ParisPipeline.from_run(lora_run.url)
    pipe.save_pretrained(str(tmp_path / "pipeline"))
    saved = ParisPipeline.from_pretrained(str(tmp_path / "pipeline"))
    assert saved.mixture.lora_experts == set()
    drawn, _ = pipe.generate(PROMPTS, strategy="oracle:1")
    again, _ = saved.generate(PROMPTS, strategy="oracle:1")
    assert (drawn - again).abs().max() < 1e-4


@pytest.mark.parametrize("change, words", [("replace", "but that base has changed"), ("remove", "which is missing")])
def test_a_changed_or_missing_base_is_refused(lora_run, tmp_path, change, words):
    run = copy_run(Path(lora_run.url), tmp_path / "run")
    if change == "replace":  # another expert 0: trained again, one step more
        state = run.load_tensors(f"{BASE}/{WEIGHTS}")
        run.save_tensors(f"{BASE}/{WEIGHTS}", {k: v * 1.001 for k, v in state.items()})
    else:
        run.remove(f"{BASE}/{WEIGHTS}")
    with pytest.raises(ParisError, match=words):
        load_expert(run, LORA)
    result = run_in_process("merge-lora", run.url, "--expert", "1", "--out", str(tmp_path / "merged"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and words in result.stderr, result.stderr


def test_a_stopped_lora_job_resumes_bitwise(lora_run, config, tmp_path):
    """Stopped after 3 of 6 steps (a checkpoint at 3), then run again: the adapter, its EMA and the optimiser
    end exactly as in the job that ran straight through."""
    straight = lora_run
    run = copy_run(Path(lora_run.url), tmp_path / "run")
    run.remove("experts/1")
    stopped = lora_config(config, checkpoint_every=3)
    train_expert(run, dataclasses.replace(stopped, expert=dataclasses.replace(stopped.expert, steps=3)), 1)
    train_expert(run, stopped, 1)
    for rel in (f"{LORA}/{ADAPTER_WEIGHTS}", "experts/1/ckpt/00000006/model.safetensors",
                "experts/1/ckpt/00000006/ema.safetensors", "experts/1/ckpt/00000006/optimizer.safetensors"):
        ours, theirs = run.load_tensors(rel), straight.load_tensors(rel)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), rel


@pytest.mark.slow
def test_a_killed_lora_job_resumes_bitwise(tmp_path):
    """SIGKILLed at step 40 of 150 and started again, a LoRA job ends with the adapter, checkpoint and optimiser
    state of the job that was never stopped (testkit.resume, as tests/train/test_resume.py does for whole experts)."""
    from testkit.resume import identical, kill_and_resume, kill_at_step_40, make_run, state, straight

    run = make_run(tmp_path / "base")
    config = run.read_config()
    train_expert(run, with_expert(config, steps=6), 1)  # the base: a finished expert 1
    lora = ("--init-from", "experts/1/final", "--lora", "4")
    reference = straight(copy_run(Path(run.url), tmp_path / "straight"), lora)
    killed = copy_run(Path(run.url), tmp_path / "killed")
    assert kill_and_resume(killed, kill_at_step_40, max_kills=1, extra=lora) == 1
    assert identical(state(killed), reference)
    assert any(k.startswith(f"final.{PEFT_PREFIX}") for k in reference)


def test_the_server_takes_a_strength_per_request_and_refuses_one_for_a_whole_expert(lora_run):
    from paris.serve.engine import Engine

    pipe = ParisPipeline.from_run(lora_run.url)
    engine = Engine(pipe, max_batch=4)
    with pytest.raises(ParisError, match="names expert 0, which is not a LoRA expert") as refused:
        engine.submit("a bag", steps=2, strategy="oracle:1", lora_scale="0=0.5")
    assert refused.value.key == "lora_scale"
    job = engine.submit(PROMPTS[0], steps=2, strategy="oracle:1", lora_scale="1=0")
    job.finished.result(timeout=120)
    base, _ = pipe.generate(PROMPTS[:1], steps=2, strategy="oracle:0")
    assert job.status == "done" and job.sample.lora_scale == "1=0"
    drawn = np.asarray(Image.open(io.BytesIO(job.images[0])))
    assert np.array_equal(drawn, np.asarray(to_pil(base[0])))  # strength 0 over HTTP too: the base's image


def test_a_lora_folder_is_no_start_for_a_whole_expert(lora_run):
    result = run_in_process("train-expert", lora_run.url, "--expert", "0", "--init-from", LORA, "--set",
                            "expert.steps=7")
    assert result.returncode == 2 and "holds a LoRA adapter, not a whole network" in result.stderr, result.stderr
