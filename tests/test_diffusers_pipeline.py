"""paris as a diffusers citizen: a saved pipeline folder loads with DiffusionPipeline.from_pretrained and draws
ParisPipeline's images; paris's Euler sampler and FlowMatchEulerDiscreteScheduler agree step for step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, ModelMixin

from paris.config import SampleConfig
from paris.flow import euler_step, time_grid
from paris.models.diffusers_model import DiffusersDiT
from paris.models.dit import DiT
from paris.models.io import load_pretrained
from paris.inference.pipeline import ParisPipeline
from paris.run import RunDir
from paris.inference.sampler import initial_noise, timesteps
from paris.inference.velocity import encode_prompts, velocity_field

PROMPTS = ["a photo of a sneaker", "a photo of a bag", "a photo of a dress"]


@pytest.fixture(scope="module")
def paris_pipe(three_experts):
    return ParisPipeline.from_pretrained(str(three_experts))


@pytest.fixture(scope="module")
def diffusers_pipe(three_experts):
    return DiffusionPipeline.from_pretrained(str(three_experts), trust_remote_code=True)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_euler_and_flow_match_scheduler_visit_the_same_times_and_latents(paris_pipe, shift):
    steps = 9
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    scheduler.set_timesteps(sigmas=time_grid(steps)[:-1].tolist())
    ours = timesteps(steps, shift)
    np.testing.assert_allclose(scheduler.sigmas.numpy(), ours, atol=1e-6)
    np.testing.assert_allclose(scheduler.timesteps.numpy(), np.array(ours[:-1]) * 1000, rtol=1e-6)

    mixture = paris_pipe.mixture
    velocity = velocity_field(mixture, encode_prompts(mixture, PROMPTS), SampleConfig(strategy="top2", guidance=3.0))
    x_ours = x_theirs = initial_noise(mixture, len(PROMPTS), torch.Generator().manual_seed(0))
    for i, (t, t_next) in enumerate(zip(ours[:-1], ours[1:])):
        x_ours = euler_step(x_ours, velocity(x_ours, t), t, t_next)
        x_theirs = scheduler.step(velocity(x_theirs, float(scheduler.sigmas[i])), scheduler.timesteps[i], x_theirs).prev_sample
    assert (x_ours - initial_noise(mixture, 3, torch.Generator().manual_seed(0))).abs().mean() > 0.1  # it moved
    torch.testing.assert_close(x_theirs, x_ours, atol=1e-5, rtol=1e-5)


def test_the_folder_is_a_diffusers_repository_of_diffusers_components(three_experts, diffusers_pipe):
    index = json.loads((three_experts / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "ParisDiffusionPipeline"]
    assert {f"expert_{k}" for k in range(3)} | {"router", "text_encoder", "tokenizer", "scheduler"} <= set(index)
    assert index["vae"] == [None, None]  # pixel space
    assert diffusers_pipe.num_experts == 3 and diffusers_pipe.vae is None
    assert all(isinstance(getattr(diffusers_pipe, f"expert_{k}"), DiT) and
               isinstance(getattr(diffusers_pipe, f"expert_{k}"), ModelMixin) for k in range(3))
    assert isinstance(diffusers_pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    # diffusers' own ModelMixin loading reads the same files as paris's loader
    theirs = DiffusersDiT.from_pretrained(str(three_experts / "expert_2"))
    ours = load_pretrained(RunDir(str(three_experts)), "expert_2")
    assert all(torch.equal(a, b) for a, b in zip(theirs.state_dict().values(), ours.state_dict().values()))


@pytest.mark.parametrize("strategy", ["top1", "top2", "full"])
def test_diffusers_draws_paris_images(paris_pipe, diffusers_pipe, strategy):
    settings = {"strategy": strategy, "guidance": 3.0, "seed": 5}
    ours, _ = paris_pipe.generate(PROMPTS, steps=7, **settings)
    theirs = diffusers_pipe(PROMPTS, num_inference_steps=7, guidance_scale=3.0, seed=5, strategy=strategy,
                            output_type="pt").images
    assert ours.std() > 0.05
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


def test_diffusers_defaults_are_the_saved_sampling_settings_and_give_pil_images(paris_pipe, diffusers_pipe):
    ours = paris_pipe(PROMPTS[:2], steps=4)
    theirs = diffusers_pipe(PROMPTS[:2], num_inference_steps=4).images
    assert [image.size for image in theirs] == [image.size for image in ours]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(theirs, ours))


def test_a_converted_release_runs_in_diffusers_with_its_vae_and_clip(tmp_path):
    from paris.inference.pipeline import convert_release
    from testkit.release import write_release

    write_release(tmp_path / "release")
    convert_release(str(tmp_path / "release"), str(tmp_path / "paris"))
    ours, _ = ParisPipeline.from_pretrained(str(tmp_path / "paris")).generate(PROMPTS[:2], steps=5, seed=2)
    pipe = DiffusionPipeline.from_pretrained(str(tmp_path / "paris"), trust_remote_code=True)
    theirs = pipe(PROMPTS[:2], num_inference_steps=5, seed=2, output_type="pt").images
    assert type(pipe.vae).__name__ == "AutoencoderKL" and type(pipe.text_encoder).__name__ == "CLIPTextModel"
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


def test_bf16_weights_draw_nearly_the_fp32_images(three_experts, diffusers_pipe):
    half = DiffusionPipeline.from_pretrained(str(three_experts), trust_remote_code=True, dtype=torch.bfloat16)
    assert half.expert_0.dtype == half.router.dtype == torch.bfloat16
    settings = {"num_inference_steps": 4, "guidance_scale": 3.0, "seed": 1, "output_type": "pt"}
    ours, theirs = half(PROMPTS, **settings).images, diffusers_pipe(PROMPTS, **settings).images
    assert ours.dtype == torch.float32 and torch.isfinite(ours).all()
    assert 0 < (ours - theirs).abs().mean() < 0.05
