"""The inference engine and the Python API: release-layout round trip, strict loading, lazy experts with a
residency cap, guidance before/after mixing, samplers."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import save_file

from testkit.runs import run_cli, run_in_process
from paris.clusters.partition import read_meta
from paris.config import SampleConfig
from paris.errors import ParisError
from paris.inference.pipeline import ParisPipeline
from paris.run import RunDir
from paris.inference.mixture import ExpertPool
from paris.inference.sampler import generate, timesteps

PROMPTS = ["a photo of a sneaker", "a photo of a bag", "a photo of a dress"]


@pytest.fixture(scope="module")
def pipe(trained):
    return ParisPipeline.from_run(str(trained))


@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory):
    path = tmp_path_factory.mktemp("release") / "paris-tiny"
    pipe.save_pretrained(str(path))
    return path


def test_save_pretrained_writes_the_release_layout(saved, trained):
    names = sorted(p.name for p in saved.iterdir())
    assert names == ["README.md", "config.json", "expert_0", "expert_1", "model_index.json", "pipeline.py", "router",
                     "scheduler", "text_encoder", "tokenizer"]
    # the partition's cluster sizes, for the model card
    assert json.loads((saved / "config.json").read_text())["cluster_sizes"] == read_meta(RunDir(str(trained)))["sizes"]
    for network in ("expert_1", "router"):
        assert sorted(p.name for p in (saved / network).iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]


def test_from_pretrained_generates_the_same_images_as_the_run(pipe, saved):
    loaded = ParisPipeline.from_pretrained(str(saved))
    a, _ = pipe.generate(PROMPTS, strategy="top2", steps=3, guidance=3.0, seed=1)
    b, _ = loaded.generate(PROMPTS, strategy="top2", steps=3, guidance=3.0, seed=1)
    assert torch.equal(a, b)
    images = loaded(PROMPTS[:2], strategy="top1", steps=2, seed=0)
    assert [im.size for im in images] == [(32, 32), (32, 32)]


def test_cli_generates_from_a_pipeline_folder(saved, tmp_path):
    result = run_in_process("generate", str(saved), "-p", "a photo of a bag", "--steps", "2", "--out", str(tmp_path / "x.png"),
                     "--show-routing")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "x.png").exists() and (tmp_path / "x_routing_0.png").exists()


def test_strict_loading_lists_what_does_not_fit(saved, tmp_path, caplog):
    import logging
    import shutil

    folder = tmp_path / "other"
    shutil.copytree(saved, folder)
    weights = folder / "expert_0" / "diffusion_pytorch_model.safetensors"
    state = RunDir(str(folder)).load_tensors("expert_0/diffusion_pytorch_model.safetensors")
    state["extra.weight"] = torch.zeros(1)
    state["t_block.1.bias"] = torch.zeros(3)
    del state["final_layer.linear.bias"]
    save_file(state, weights)
    pipe = ParisPipeline.from_pretrained(str(folder))
    with caplog.at_level(logging.WARNING, logger="paris"):
        pipe.generate(PROMPTS, strategy="full", steps=1)  # an expert that does not load is retired, not fatal
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "missing final_layer.linear.bias" in message and "unexpected extra.weight" in message
    assert "t_block.1.bias has shape (3,)" in message and pipe.mixture.retired == {0}


def test_pickle_only_checkpoint_is_refused(saved, tmp_path):
    import shutil

    folder = tmp_path / "pickled"
    shutil.copytree(saved, folder)
    (folder / "router" / "diffusion_pytorch_model.safetensors").rename(folder / "router" / "pytorch_model.bin")
    with pytest.raises(ParisError, match="pickle checkpoints are refused"):
        ParisPipeline.from_pretrained(str(folder))


def test_a_router_for_another_number_of_experts_is_refused(saved, tmp_path):
    import json
    import shutil

    folder = tmp_path / "three"
    shutil.copytree(saved, folder)
    shutil.copytree(folder / "expert_1", folder / "expert_2")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_experts": 3}))
    with pytest.raises(ParisError, match="chooses among 2 experts but there are 3"):
        ParisPipeline.from_pretrained(str(folder))


def test_residency_cap_gives_the_same_images_with_fewer_experts_in_memory(trained):
    capped = ParisPipeline.from_run(str(trained), max_resident_experts=1)
    free = ParisPipeline.from_run(str(trained))
    a, _ = capped.generate(PROMPTS, strategy="full", steps=2, seed=0)
    b, _ = free.generate(PROMPTS, strategy="full", steps=2, seed=0)
    assert torch.equal(a, b)
    assert len(capped.mixture.experts.resident) == 1 and capped.mixture.experts.loads > 2
    assert len(free.mixture.experts.resident) == 2 and free.mixture.experts.loads == 2


def test_expert_pool_evicts_the_least_recently_used():
    pool = ExpertPool([lambda k=k: torch.nn.Linear(1, 1) for k in range(3)], max_resident=2)
    pool[0], pool[1], pool[0], pool[2]
    assert list(pool.resident) == [0, 2] and pool.loads == 3


# --- offload: the experts a cap evicts wait in host memory ------------------------------------------

def count_loads(pipe: ParisPipeline) -> list[int]:
    """Wrap the pipeline's own loaders (each reads one expert from disk); the list counts each one's calls."""
    calls = [0] * len(pipe.mixture.experts)

    def counted(k, load):
        def read():
            calls[k] += 1
            return load()
        return read

    pipe.mixture.experts.loaders = [counted(k, load) for k, load in enumerate(pipe.mixture.experts.loaders)]
    return calls


TOP2 = {"strategy": "top2", "steps": 4, "guidance": 3.0, "seed": 0}


def test_offload_reads_each_expert_from_disk_once_and_draws_the_same_images(three_experts):
    offloaded = ParisPipeline.from_pretrained(str(three_experts), max_resident_experts=1, offload_experts=True)
    calls = count_loads(offloaded)
    images, _ = offloaded.generate(PROMPTS, **TOP2)
    uncapped, _ = ParisPipeline.from_pretrained(str(three_experts)).generate(PROMPTS, **TOP2)
    assert calls == [1, 1, 1] and offloaded.mixture.experts.loads == 3
    assert torch.equal(images, uncapped)
    pool = offloaded.mixture.experts
    assert len(pool.resident) == 1 and sorted([*pool.resident, *pool.offloaded]) == [0, 1, 2]


def test_without_offload_a_cap_reads_evicted_experts_from_disk_again(three_experts):
    capped = ParisPipeline.from_pretrained(str(three_experts), max_resident_experts=1)
    calls = count_loads(capped)
    capped.generate(PROMPTS, **TOP2)
    assert sum(calls) > 3 and capped.mixture.experts.loads == sum(calls)  # at least one read per step
    assert len(capped.mixture.experts.resident) == 1 and not capped.mixture.experts.offloaded


def test_offload_without_a_cap_is_refused():
    with pytest.raises(ParisError, match="give a cap too"):
        ExpertPool([lambda: torch.nn.Linear(1, 1)], offload=True)


def test_cli_offload_needs_a_cap_and_samples_with_one(three_experts, tmp_path):
    from testkit.runs import assert_user_error

    out = tmp_path / "x.png"
    assert_user_error(run_in_process("generate", str(three_experts), "-p", "a bag", "--offload", "--out", str(out)),
                      "--offload", "add --max-resident-experts N")
    result = run_in_process("generate", str(three_experts), "-p", "a bag", "-p", "a coat", "--strategy", "top2", "--steps",
                     "2", "--max-resident-experts", "1", "--offload", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_offloaded_experts_wait_in_pinned_host_memory(three_experts):
    pipe = ParisPipeline.from_pretrained(str(three_experts), max_resident_experts=1, device="cuda",
                                         offload_experts=True)
    calls = count_loads(pipe)
    pool = pipe.mixture.experts
    first = pool[0]
    pool[1]
    assert all(p.device.type == "cpu" and p.is_pinned() for p in pool.offloaded[0].parameters())
    host = [p.data_ptr() for p in pool.offloaded[0].parameters()]
    assert pool[0] is first and all(p.is_cuda for p in first.parameters()) and calls == [1, 1, 0]
    pool[1]  # evicts expert 0 again: it goes back to its first host copy, no new one
    assert [p.data_ptr() for p in pool.offloaded[0].parameters()] == host
    images, _ = pipe.generate(PROMPTS, **TOP2)
    uncapped, _ = ParisPipeline.from_pretrained(str(three_experts), device="cuda").generate(PROMPTS, **TOP2)
    assert calls == [1, 1, 1] and torch.allclose(images, uncapped, atol=1e-5)


def test_guidance_after_mixing_is_the_same_flow_for_a_router_without_text(pipe):
    """Guidance is linear: with the same weights for both branches, guiding before or after mixing agree."""
    per, _ = pipe.generate(PROMPTS, strategy="full", steps=2, guidance=4.0, guidance_mode="per-expert")
    after, _ = pipe.generate(PROMPTS, strategy="full", steps=2, guidance=4.0, guidance_mode="after")
    assert torch.allclose(per, after, atol=1e-5)


def test_guidance_after_mixing_uses_the_routers_weights_for_the_empty_prompt(pipe):
    """With a text-conditioned router (DDM), "after" mixes v(empty) with p(k | x_t, t, "") and so differs."""
    from testkit.runs import randomize_zero_params
    from paris.models.router import Router

    router = pipe.mixture.router
    text_router = randomize_zero_params(Router(dataclasses.replace(router.architecture, text_dim=384)), seed=0, std=0.5)
    mixture = dataclasses.replace(pipe.mixture, router=text_router.eval())
    # "full": continuous weights, which differ between the prompt and "" whenever the router uses the text.
    per, _ = generate(mixture, PROMPTS, SampleConfig().updated(strategy="full", steps=2, guidance=4.0, guidance_mode="per-expert"))
    after, _ = generate(mixture, PROMPTS, SampleConfig().updated(strategy="full", steps=2, guidance=4.0, guidance_mode="after"))
    assert not torch.allclose(per, after, atol=1e-4)


def test_guidance_one_runs_only_the_conditional_pass(pipe):
    """At guidance 1 both modes give v(text): each expert runs on the batch once, not on it and the empty prompt."""
    from paris.inference.velocity import encode_prompts, velocity_field

    mixture = pipe.mixture
    batch_sizes = []
    hooks = [mixture.experts[k].register_forward_hook(lambda m, args, out: batch_sizes.append(len(args[0])))
             for k in range(len(mixture.experts))]
    x = torch.randn(len(PROMPTS), *mixture.latent_shape, generator=torch.Generator().manual_seed(0))
    try:
        cond = encode_prompts(mixture, PROMPTS)
        once = {mode: velocity_field(mixture, cond, SampleConfig(strategy="full", guidance=1.0, guidance_mode=mode))(x, 0.6)
                for mode in ("per-expert", "after")}
        passes_once, batch_sizes[:] = list(batch_sizes), []
        nearly_one = velocity_field(mixture, cond, SampleConfig(strategy="full", guidance=1.0 + 1e-7))(x, 0.6)  # both passes
    finally:
        for hook in hooks:
            hook.remove()
    assert passes_once == [len(PROMPTS)] * 4 and batch_sizes == [2 * len(PROMPTS)] * 2
    assert torch.equal(once["per-expert"], once["after"])
    assert torch.allclose(once["per-expert"], nearly_one, atol=1e-5)


def test_heun_evaluates_twice_per_step_and_time_shift():
    assert timesteps(4) == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    shifted = timesteps(4, shift=3.0)
    assert shifted[0] == 1.0 and shifted[-1] == 0.0 and shifted[2] == pytest.approx(0.75)  # 3*.5/(1+2*.5)


def test_heun_costs_two_router_calls_per_step_but_the_last(pipe):
    _, euler = pipe.generate(PROMPTS, strategy="top1", steps=3, trace=True)
    _, heun = pipe.generate(PROMPTS, strategy="top1", steps=3, sampler="heun", trace=True)
    assert euler["routing"].shape == (3, 3, 2) and heun["routing"].shape == (3, 5, 2)
    assert heun["expert_passes_per_image"] == pytest.approx(5 / 3)


def test_route_every_reuses_the_routers_weights_between_calls(pipe):
    _, every = pipe.generate(PROMPTS, strategy="full", steps=6, trace=True)
    _, third = pipe.generate(PROMPTS, strategy="full", steps=6, route_every=3, trace=True)
    assert every["router_calls_per_step"] == 1 and third["router_calls_per_step"] == pytest.approx(2 / 6)
    w = third["routing"]  # [B, evaluations, K]: evaluations 0-2 use the call at t=1, 3-5 the call at t=0.5
    assert torch.equal(w[:, 0], w[:, 1]) and torch.equal(w[:, 0], w[:, 2]) and torch.equal(w[:, 3], w[:, 5])
    assert not torch.equal(w[:, 0], w[:, 3])
    assert torch.equal(w[:, 0], every["routing"][:, 0])  # the same first call
    assert third["expert_passes_per_image"] == every["expert_passes_per_image"] == 2  # full: both experts always
    with pytest.raises(ParisError, match="'sample.route_every' must be at least 1"):
        pipe.generate(PROMPTS, route_every=0)


def test_a_prompt_longer_than_the_text_encoder_is_truncated_with_a_warning(trained, tmp_path):
    long_prompt = "a photo of a sneaker " + "with laces " * 40
    # A process of its own: the warning is what the console shows on stderr.
    result = run_cli("generate", str(trained), "-p", long_prompt, "--steps", "1", "--out", str(tmp_path / "x.png"))
    assert result.returncode == 0, result.stderr
    assert "is longer than" in result.stderr and "tokens and is truncated" in result.stderr
    assert "Traceback" not in result.stderr


def test_python_and_the_command_line_draw_the_same_images(trained, saved, tmp_path):
    """ParisPipeline.from_run(RUN)(prompt) samples with the run's settings, as `paris generate RUN` does; a saved
    pipeline keeps them."""
    import numpy as np
    from PIL import Image

    python = ParisPipeline.from_run(str(trained))
    assert python.sample == RunDir(str(trained)).read_config().sample and python.sample.guidance != 7.5
    assert ParisPipeline.from_pretrained(str(saved)).sample == python.sample
    image = python("a photo of a sneaker")[0]
    out = tmp_path / "cli.png"
    result = run_in_process("generate", str(trained), "--prompt", "a photo of a sneaker", "--out", str(out))
    assert result.returncode == 0, result.stderr
    drawn = Image.open(out).convert("L")  # one image, each pixel drawn as a 4x4 block
    assert drawn.size == (4 * image.width, 4 * image.height)
    assert np.array_equal(np.asarray(drawn.resize(image.size, Image.NEAREST)), np.asarray(image))
    other = python("a photo of a sneaker", guidance=7.5)[0]  # and a setting given in the call wins
    assert not np.array_equal(np.asarray(other), np.asarray(image))


def test_min_weight_skips_the_passes_of_light_experts(three_experts):
    """top2's second weight is at most 1/2: above that, top2 is top1, pass for pass and pixel for pixel."""
    pipe = ParisPipeline.from_pretrained(str(three_experts))
    top1, one = pipe.generate(PROMPTS, strategy="top1", steps=3)
    top2, two = pipe.generate(PROMPTS, strategy="top2", steps=3, min_weight=0.0)
    skipped, light = pipe.generate(PROMPTS, strategy="top2", steps=3, min_weight=0.51)
    assert two["expert_passes_per_image"] == 2 and light["expert_passes_per_image"] == one["expert_passes_per_image"] == 1
    assert torch.equal(skipped, top1) and not torch.equal(top2, top1)
    some, _ = pipe.generate(PROMPTS, strategy="top2", steps=3, min_weight=0.01)  # (and the default, 0.05)
    assert torch.equal(some, top2)  # on this router no second weight is below 1%


def test_a_negative_prompt_takes_the_empty_prompts_place(three_experts):
    pipe = ParisPipeline.from_pretrained(str(three_experts))
    plain, _ = pipe.generate(PROMPTS, steps=2, guidance=3.0)
    assert torch.equal(pipe.generate(PROMPTS, steps=2, guidance=3.0, negative_prompts=[""])[0], plain)
    one, _ = pipe.generate(PROMPTS, steps=2, guidance=3.0, negative_prompts=["a blurry photo"])
    each, _ = pipe.generate(PROMPTS, steps=2, guidance=3.0, negative_prompts=["a blurry photo"] * len(PROMPTS))
    assert torch.equal(one, each) and not torch.allclose(one, plain, atol=1e-3)
    unguided, _ = pipe.generate(PROMPTS, steps=2, guidance=1.0, negative_prompts=["a blurry photo"])
    assert torch.equal(unguided, pipe.generate(PROMPTS, steps=2, guidance=1.0)[0])  # guidance 1: no negative pass
    with pytest.raises(ParisError, match="one negative prompt, or one per prompt"):
        pipe.generate(PROMPTS, negative_prompts=["a", "b"])
