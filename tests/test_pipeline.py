"""End to end: prepare -> partition (K=2) -> two experts -> router -> generate with every strategy, and the
mixture rule itself: generate's grouped, per-expert sub-batches give the same velocity as running every
expert on every sample and weighting by the routing rule."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from testkit.runs import NUM_IMAGES, copy_run, randomize_zero_params, run_in_process
from paris.config import DiTConfig, RouterConfig, SampleConfig
from paris.errors import ParisError
from paris.models.encoders import IdentityAutoencoder
from paris.flow import euler_step, time_grid
from paris.models.dit import DiT
from paris.models.io import load_pretrained
from paris.models.router import Router
from paris.inference.routing import routing_weights, without_small
from paris.run import RunDir
from paris.inference.pipeline import ParisPipeline
from paris.inference.mixture import ExpertPool, Mixture
from paris.inference.sampler import generate
from paris.inference.velocity import Conditioning, conditional_velocities, guide
from paris.train.router import train_router

# Every deterministic rule: the grouped sampler must equal running every expert on every sample.
STRATEGIES = ["top1", "top2", "full", "topk:3", "nucleus:0.7", "threshold:0.3", "oracle:1"]

PROMPTS = ["a photo of a sneaker", "a photo of a trouser", "a photo of a bag"]


@pytest.fixture(scope="module")
def mixture(trained):
    return ParisPipeline.from_run(str(trained)).mixture


def test_trained_run_has_every_artifact(trained, config):
    run = RunDir(str(trained))
    for k in range(2):
        assert run.read_json(f"experts/{k}/final/manifest.json")["cluster"] == k
    router = load_pretrained(run, "router/final")
    assert isinstance(router, Router) and router.architecture.num_experts == 2 and router.architecture.text_dim == 0
    accuracy = run.read_json("router/accuracy.json")
    assert accuracy["held_out"] == int(NUM_IMAGES * config.router.val_fraction)
    assert set(accuracy["bands"]) == {"0.0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1.0"}
    assert all(0 <= a <= 1 for a in accuracy["bands"].values())


def test_a_second_router_reads_the_prompt_beside_the_first(trained, tmp_path, config):
    """DDM's router (router.use_text, `paris demo --full`'s second one) trained as router-text/ beside Paris's:
    sampling with it hands it the prompt's states, so from the same noise two prompts are routed differently at
    t=1, where the image says nothing yet; sampling with router/ (which sees no text) routes them alike."""
    run = copy_run(trained, tmp_path / "run")
    train_router(run, dataclasses.replace(config, router=dataclasses.replace(config.router, use_text=True)),
                 name="text")
    assert load_pretrained(run, "router-text/final").architecture.text_dim == 384
    assert run.read_json("router-text/accuracy.json")["held_out"] == int(NUM_IMAGES * config.router.val_fraction)
    assert load_pretrained(run, "router/final").architecture.text_dim == 0
    noise = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)).expand(2, -1, -1, -1)
    prompts = ["a photo of a bag", "a photo of a trouser"]
    first = {}
    for name in ("text", ""):
        _, stats = ParisPipeline.from_run(run.url, router=name).generate(prompts, steps=2, strategy="full",
                                                                         noise=noise, trace=True)
        first[name] = stats["routing"][:, 0]  # [prompt, K] at t=1
    assert not torch.allclose(first["text"][0], first["text"][1])
    assert torch.allclose(first[""][0], first[""][1])
    with pytest.raises(ParisError, match="paris train-router RUN --name other"):
        ParisPipeline.from_run(run.url, router="other")


def test_mixture_loads_the_trained_models(mixture):
    assert len(mixture.experts) == 2 and all(isinstance(e, DiT) for e in mixture.experts)
    assert not any(e.training for e in mixture.experts) and not mixture.router.training
    assert mixture.text_encoder.dim == 384


@pytest.mark.parametrize("strategy,passes", [("top1", 1), ("top2", 2), ("full", 2)])
def test_generate_each_strategy(mixture, strategy, passes):
    images, stats = generate(mixture, PROMPTS, SampleConfig().updated(strategy=strategy, steps=4, guidance=4.0, seed=0))
    assert images.shape == (3, 1, 32, 32)
    assert torch.isfinite(images).all() and images.min() >= -1 and images.max() <= 1
    assert stats["expert_passes_per_image"] == passes


def test_generate_is_reproducible_and_seeded(mixture):
    a, _ = generate(mixture, PROMPTS[:2], SampleConfig().updated(strategy="top2", steps=2, seed=3))
    b, _ = generate(mixture, PROMPTS[:2], SampleConfig().updated(strategy="top2", steps=2, seed=3))
    c, _ = generate(mixture, PROMPTS[:2], SampleConfig().updated(strategy="top2", steps=2, seed=4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_generate_refuses_empty_prompts_and_unknown_strategy(mixture):
    with pytest.raises(ParisError, match="prompt"):
        generate(mixture, [], SampleConfig().updated(strategy="top2"))
    with pytest.raises(ParisError, match="'best'"):
        generate(mixture, PROMPTS, SampleConfig().updated(strategy="best"))


def test_cli_generate_writes_png(trained, tmp_path):
    from PIL import Image

    out = tmp_path / "grid.png"
    result = run_in_process("generate", str(trained), "-p", "a photo of a bag", "-p", "a photo of a dress", "--num", "2",
                     "--steps", "2", "--strategy", "top1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert int(re.search(r"peak memory (\d+) MiB", result.stdout).group(1)) > 100  # torch + MiniLM alone exceed it
    assert "sampling 4 images (top1): 2/2 steps" in result.stdout + result.stderr  # a bar (a line in a log) per step
    image = Image.open(out)
    assert image.size == (150 + 2 * 32 * 4, 2 * 32 * 4)  # 2 rows (prompts) x 2 images, 4x scale, label margin


# --- the mixture rule, against a direct implementation -------------------------------------------

@pytest.fixture(scope="module")
def random_mixture(text_encoder):
    """K=3 small experts and a router with random (non-zero) weights, so every expert's velocity and the
    routing differ: with K=3, top2 leaves one expert out for each sample and the sub-batches really differ."""
    expert = DiTConfig(input_size=8, in_channels=1, patch_size=2, hidden_size=32, depth=2, num_heads=2,
                       text_dim=text_encoder.dim)
    experts = []
    for k in range(3):
        torch.manual_seed(k)
        experts.append(randomize_zero_params(DiT(expert), seed=k, std=0.1).eval())
    torch.manual_seed(10)
    router = randomize_zero_params(Router(RouterConfig(input_size=8, in_channels=1, patch_size=2, hidden_size=32,
                                                       depth=1, num_heads=2, num_experts=3)), seed=10, std=0.5)
    return Mixture(ExpertPool([lambda e=e: e for e in experts]), router.eval(), text_encoder, IdentityAutoencoder(),
                   (1, 8, 8))


@torch.no_grad()
def _every_expert_on_every_sample(mixture, prompts, strategy, steps, guidance, seed, min_weight=0.0):
    """The decentralized flow written plainly: v = sum_k w_k v_k with every expert run on the whole batch (the
    weights of the rule, those below min_weight left out)."""
    text, mask = mixture.text_encoder.encode(prompts)
    null_text, null_mask = mixture.text_encoder.encode([""])
    c = mixture.experts[0].architecture
    x = torch.randn(len(prompts), c.in_channels, c.input_size, c.input_size,
                    generator=torch.Generator().manual_seed(seed))  # generate's initial noise
    times = time_grid(steps).tolist()
    all_weights = []
    for t, t_next in zip(times[:-1], times[1:]):
        t_batch = torch.full((len(x),), t)
        weights = without_small(routing_weights(mixture.router(x, t_batch).softmax(-1), strategy), min_weight)
        v = 0
        for k, e in enumerate(mixture.experts):  # classifier-free guidance: v_uncond + s (v_cond - v_uncond)
            v_cond = e(x, t_batch, text, mask)
            v_uncond = e(x, t_batch, null_text.expand(len(x), -1, -1), null_mask.expand(len(x), -1))
            v = v + weights[:, k].view(-1, 1, 1, 1) * (v_uncond + guidance * (v_cond - v_uncond))
        x = euler_step(x, v, t, t_next)
        all_weights.append(weights)
    return x.clamp(-1, 1), torch.cat(all_weights)


@pytest.mark.parametrize("min_weight", [0.0, 0.3])
@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_grouped_sampling_equals_weighting_every_expert(random_mixture, strategy, steps, min_weight):
    prompts = PROMPTS + ["a picture of a coat", ""]
    sample = SampleConfig().updated(strategy=strategy, steps=steps, guidance=3.0, seed=7, min_weight=min_weight)
    images, stats = generate(random_mixture, prompts, sample)
    expected, weights = _every_expert_on_every_sample(random_mixture, prompts, strategy, steps, 3.0, 7, min_weight)
    assert torch.allclose(images, expected, atol=1e-5)
    inside = ((expected > -1) & (expected < 1)).float().mean().item()
    assert inside > 0.2  # the comparison is not only on clamped values
    assert stats["expert_passes_per_image"] == pytest.approx((weights > 0).sum().item() / len(prompts) / steps)


def test_strategies_give_different_images(random_mixture):
    """Sanity check that the comparison above is sensitive: the rules really produce different velocities."""
    out = {s: generate(random_mixture, PROMPTS, SampleConfig().updated(strategy=s, steps=1, guidance=3.0, seed=7))[0]
           for s in STRATEGIES}
    assert not torch.allclose(out["top1"], out["top2"], atol=1e-4)
    assert not torch.allclose(out["top2"], out["full"], atol=1e-4)


def test_a_clip_mixture_samples_without_its_all_true_mask_and_draws_the_same_images(three_experts):
    """CLIP attends to every token: generate gives the experts no mask at all, the plain version the mask."""
    mixture = ParisPipeline.from_pretrained(str(three_experts)).mixture
    assert mixture.text_encoder.encode(PROMPTS)[1].all()
    images, _ = generate(mixture, PROMPTS, SampleConfig().updated(strategy="top2", steps=2, guidance=3.0, seed=7))
    expected, _ = _every_expert_on_every_sample(mixture, PROMPTS, "top2", 2, 3.0, 7, SampleConfig().min_weight)
    assert torch.allclose(images, expected, atol=1e-5)


def test_precision_auto_is_fp32_on_a_cpu_and_bf16_is_close_to_it(random_mixture):
    fp32, _ = generate(random_mixture, PROMPTS, SampleConfig().updated(strategy="full", steps=2, guidance=3.0, precision="fp32"))
    auto, _ = generate(random_mixture, PROMPTS, SampleConfig().updated(strategy="full", steps=2, guidance=3.0))
    bf16, _ = generate(random_mixture, PROMPTS, SampleConfig().updated(strategy="full", steps=2, guidance=3.0, precision="bf16"))
    assert torch.equal(auto, fp32)
    assert 1e-4 < (bf16 - fp32).abs().max() < 0.05
    with pytest.raises(ParisError, match="'sample.precision' must be one of auto, bf16, fp32; got 'fp16'"):
        generate(random_mixture, PROMPTS, SampleConfig().updated(precision="fp16"))


def test_compile_runs_each_expert_through_torch_compile(random_mixture, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model: compiled.append(model) or model)  # compiling takes minutes
    images, _ = generate(random_mixture, PROMPTS, SampleConfig().updated(strategy="full", steps=1, guidance=3.0, compile=True))
    assert compiled == list(random_mixture.experts.resident.values())  # one pass of each of the 3 experts
    assert torch.equal(images, generate(random_mixture, PROMPTS, SampleConfig().updated(strategy="full", steps=1, guidance=3.0))[0])


def test_guidance_scale_one_is_the_conditional_velocity(random_mixture, text_encoder):
    expert = random_mixture.experts[0]
    x = torch.randn(2, 1, 8, 8)
    t = torch.tensor([0.3, 0.8])
    text, mask = text_encoder.encode(PROMPTS[:2])
    null_text, null_mask = text_encoder.encode([""])
    cond = Conditioning(text, mask, null_text.expand(2, -1, -1), null_mask.expand(2, -1))
    with torch.no_grad():
        guided = guide(*conditional_velocities(expert, x, t, cond), 1.0)
        unguided = guide(*conditional_velocities(expert, x, t, cond), 0.0)
        assert torch.allclose(guided, expert(x, t, text, mask), atol=1e-5)
        assert torch.allclose(unguided, expert(x, t, cond.negative, cond.negative_mask), atol=1e-5)
