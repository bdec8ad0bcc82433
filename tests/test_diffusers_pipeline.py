"""paris as a diffusers citizen: a saved pipeline folder loads with DiffusionPipeline.from_pretrained and draws
ParisPipeline's images; paris's Euler and Heun samplers and diffusers' FlowMatch Euler and Heun schedulers agree
step for step; the call follows diffusers' conventions (the checks of diffusers' PipelineTesterMixin: dict and
tuple outputs, num_images_per_prompt, generator lists, batch against single, callbacks, output types, save and
load), each on a few steps of the tiny three_experts mixture."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import (DDIMScheduler, DiffusionPipeline, FlowMatchEulerDiscreteScheduler,
                       FlowMatchHeunDiscreteScheduler, ModelMixin)

from paris.config import SampleConfig
from paris.errors import ParisError
from paris.flow import euler_step, time_grid
from paris.models.diffusers_model import DiffusersDiT
from paris.models.dit import DiT
from paris.models.io import load_pretrained
from paris.inference.pipeline import ParisPipeline
from paris.run import RunDir
from paris.inference.diffusers_schedulers import set_paris_grid
from paris.inference.sampler import initial_noise, integrate, timesteps
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
    torch.testing.assert_close(theirs, (ours + 1) / 2, atol=1e-5, rtol=1e-5)  # diffusers' pt images are in [0, 1]


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
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    # diffusers' and transformers' classes, loaded through paris's strict loader (paris.models.diffusers_model)
    assert isinstance(pipe.vae, AutoencoderKL) and isinstance(pipe.text_encoder, CLIPTextModel)
    assert type(pipe.vae).__name__ == "StrictAutoencoderKL" and type(pipe.text_encoder).__name__ == "StrictCLIPTextModel"
    assert pipe.vae_scale_factor == 8
    torch.testing.assert_close(theirs, (ours + 1) / 2, atol=1e-5, rtol=1e-5)


def test_bf16_weights_draw_nearly_the_fp32_images(three_experts, diffusers_pipe):
    half = DiffusionPipeline.from_pretrained(str(three_experts), trust_remote_code=True, dtype=torch.bfloat16)
    assert half.expert_0.dtype == half.router.dtype == torch.bfloat16
    settings = {"num_inference_steps": 4, "guidance_scale": 3.0, "seed": 1, "output_type": "pt"}
    ours, theirs = half(PROMPTS, **settings).images, diffusers_pipe(PROMPTS, **settings).images
    assert ours.dtype == torch.float32 and torch.isfinite(ours).all()
    assert 0 < (ours - theirs).abs().mean() < 0.05


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_heun_and_flow_match_heun_scheduler_visit_the_same_latents(paris_pipe, shift):
    sample = SampleConfig(strategy="top2", guidance=3.0, steps=4, sampler="heun", shift=shift)
    scheduler = FlowMatchHeunDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    set_paris_grid(scheduler, sample.steps, torch.device("cpu"))
    ours = timesteps(sample.steps, shift)  # each interior time twice: a step's end, then the next one's start
    np.testing.assert_allclose(scheduler.timesteps.numpy() / 1000, [ours[0], *np.repeat(ours[1:-1], 2)], atol=1e-6)
    np.testing.assert_allclose(scheduler.sigmas.numpy(), [ours[0], *np.repeat(ours[1:-1], 2), 0], atol=1e-6)

    mixture = paris_pipe.mixture
    noise = initial_noise(mixture, len(PROMPTS), torch.Generator().manual_seed(0))
    cond = encode_prompts(mixture, PROMPTS)
    x_ours = integrate(velocity_field(mixture, cond, sample), noise, sample)
    velocity, x_theirs = velocity_field(mixture, cond, sample), noise
    for i, t in enumerate(scheduler.timesteps):
        x_theirs = scheduler.step(velocity(x_theirs, float(scheduler.sigmas[i])), t, x_theirs).prev_sample
    assert mixture.stats["expert_passes"] > 0 and len(scheduler.timesteps) == 2 * sample.steps - 1
    torch.testing.assert_close(x_theirs, x_ours, atol=1e-5, rtol=1e-5)


def test_diffusers_heun_draws_paris_heun_images(paris_pipe, diffusers_pipe):
    settings = {"guidance": 3.0, "seed": 5, "steps": 3}
    ours, _ = paris_pipe.generate(PROMPTS, sampler="heun", **settings)
    euler, _ = paris_pipe.generate(PROMPTS, **settings)
    theirs = diffusers_pipe(PROMPTS, num_inference_steps=3, guidance_scale=3.0, seed=5, sampler="heun",
                            output_type="pt").images
    assert isinstance(diffusers_pipe.scheduler, FlowMatchEulerDiscreteScheduler)  # heun was asked, not swapped in
    assert (ours - euler).abs().max() > 1e-3
    torch.testing.assert_close(theirs, (ours + 1) / 2, atol=1e-5, rtol=1e-5)


def test_a_folder_saved_with_heun_samples_with_the_heun_scheduler_and_reloads_the_same(paris_pipe, tmp_path):
    heun = ParisPipeline(paris_pipe.mixture, paris_pipe.config, paris_pipe.sample.updated(sampler="heun", steps=2))
    heun.save_pretrained(str(tmp_path / "heun"))
    index = json.loads((tmp_path / "heun" / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "FlowMatchHeunDiscreteScheduler"]
    first, second = (DiffusionPipeline.from_pretrained(str(tmp_path / "heun"), trust_remote_code=True)
                     for _ in range(2))
    assert isinstance(first.scheduler, FlowMatchHeunDiscreteScheduler)
    theirs = first(PROMPTS[:2], output_type="pt").images
    torch.testing.assert_close(theirs, second(PROMPTS[:2], output_type="pt").images, atol=0, rtol=0)
    torch.testing.assert_close(theirs, (heun.generate(PROMPTS[:2])[0] + 1) / 2, atol=1e-5, rtol=1e-5)


def test_a_scheduler_of_another_sampler_is_rebuilt_with_a_warning_and_any_other_refused(diffusers_pipe, monkeypatch,
                                                                                        caplog):
    settings = {"num_inference_steps": 2, "output_type": "pt"}
    euler = diffusers_pipe(PROMPTS[:1], **settings).images
    monkeypatch.setattr(diffusers_pipe, "scheduler", FlowMatchHeunDiscreteScheduler())  # swapped in by hand
    torch.testing.assert_close(diffusers_pipe(PROMPTS[:1], **settings).images, euler)  # the saved sampler: euler
    assert "sampling with FlowMatchEulerDiscreteScheduler" in caplog.text
    monkeypatch.setattr(diffusers_pipe, "scheduler", DDIMScheduler())
    with pytest.raises(ParisError, match="paris samples with FlowMatchEulerDiscreteScheduler"):
        diffusers_pipe(PROMPTS[:1], **settings)


def test_negative_prompts_images_per_prompt_and_a_generator_draw_paris_images(paris_pipe, diffusers_pipe):
    negatives = ["a blurry photo", "a dark photo"]
    theirs = diffusers_pipe(PROMPTS[:2], negative_prompt=negatives, num_images_per_prompt=2, num_inference_steps=2,
                            generator=torch.Generator().manual_seed(0), output_type="pt").images
    twice = lambda texts: [text for text in texts for _ in range(2)]  # noqa: E731  (each prompt's images side by side)
    ours, _ = paris_pipe.generate(twice(PROMPTS[:2]), negative_prompts=twice(negatives), steps=2,
                                  generator=torch.Generator().manual_seed(0))
    plain, _ = paris_pipe.generate(twice(PROMPTS[:2]), steps=2, generator=torch.Generator().manual_seed(0))
    assert theirs.shape == (4, 1, 8, 8) and (ours - plain).abs().max() > 1e-3  # the negative prompts count
    torch.testing.assert_close(theirs, (ours + 1) / 2, atol=1e-5, rtol=1e-5)


def test_dict_and_tuple_outputs_are_the_same(diffusers_pipe):
    settings = {"num_inference_steps": 2, "seed": 3, "output_type": "np"}
    as_dict = diffusers_pipe(PROMPTS[:1], **settings).images
    as_tuple = diffusers_pipe(PROMPTS[:1], return_dict=False, **settings)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
    np.testing.assert_array_equal(as_tuple[0], as_dict)


def test_a_generator_list_and_a_batch_draw_what_single_calls_draw(diffusers_pipe):
    settings = {"num_inference_steps": 2, "output_type": "pt", "strategy": "top1"}
    batch = diffusers_pipe(PROMPTS[:2], generator=[torch.Generator().manual_seed(s) for s in (1, 2)],
                           **settings).images
    singles = [diffusers_pipe(prompt, generator=torch.Generator().manual_seed(s), **settings).images
               for prompt, s in zip(PROMPTS[:2], (1, 2))]
    torch.testing.assert_close(batch, torch.cat(singles), atol=1e-4, rtol=1e-4)


def test_given_latents_are_the_noise_and_a_wrong_shape_is_refused(paris_pipe, diffusers_pipe):
    noise = initial_noise(paris_pipe.mixture, 2, torch.Generator().manual_seed(4))
    settings = {"num_inference_steps": 2, "output_type": "latent"}
    given = diffusers_pipe(PROMPTS[:2], latents=noise, **settings).images
    torch.testing.assert_close(given, diffusers_pipe(PROMPTS[:2], seed=4, **settings).images, atol=0, rtol=0)
    with pytest.raises(ParisError, match=r"latents must have shape \[2, 1, 8, 8\]"):
        diffusers_pipe(PROMPTS[:2], latents=noise[:1], **settings)


@pytest.mark.parametrize("num_images_per_prompt", [1, 2])
def test_every_output_type_holds_the_same_images(diffusers_pipe, num_images_per_prompt):
    settings = {"num_inference_steps": 2, "seed": 6, "num_images_per_prompt": num_images_per_prompt}
    latents = diffusers_pipe(PROMPTS[:2], output_type="latent", **settings).images
    pt = diffusers_pipe(PROMPTS[:2], output_type="pt", **settings).images
    arrays = diffusers_pipe(PROMPTS[:2], output_type="np", **settings).images
    pil = diffusers_pipe(PROMPTS[:2], **settings).images
    assert latents.shape == pt.shape == (2 * num_images_per_prompt, 1, 8, 8)  # pixel space: latents are images
    torch.testing.assert_close(pt, (latents.clamp(-1, 1) + 1) / 2)
    assert 0 <= pt.min() and pt.max() <= 1
    np.testing.assert_array_equal(arrays, pt.permute(0, 2, 3, 1).numpy())
    assert len(pil) == len(pt) and np.abs(np.asarray(pil[0]) / 255 - arrays[0, ..., 0]).max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_the_callback_sees_every_step(diffusers_pipe, sampler):
    seen = []
    diffusers_pipe(PROMPTS[:1], num_inference_steps=3, sampler=sampler, output_type="latent",
                   callback_on_step_end=lambda pipe, i, t, tensors: seen.append((i, float(t))) or tensors)
    grid = [1000 * t for t in timesteps(3)[:-1]]
    expected = grid if sampler == "euler" else [grid[0], *np.repeat(grid[1:], 2)]  # heun: predictor, corrector
    assert diffusers_pipe.num_timesteps == len(expected)
    assert [i for i, _ in seen] == list(range(len(expected)))
    np.testing.assert_allclose([t for _, t in seen], expected, rtol=1e-6)


def test_the_callback_can_interrupt_and_replace_the_latents(diffusers_pipe):
    seen = {}

    def stop_after_step_1(pipe, i, t, tensors):
        seen[i] = tensors["latents"].clone()
        pipe._interrupt = i == 1
        return tensors

    settings = {"num_inference_steps": 4, "seed": 0, "output_type": "latent"}
    stopped = diffusers_pipe(PROMPTS[:1], callback_on_step_end=stop_after_step_1, **settings).images
    assert sorted(seen) == [0, 1] and diffusers_pipe.interrupt
    torch.testing.assert_close(stopped, seen[1], atol=0, rtol=0)  # the later steps were skipped
    zeroed = diffusers_pipe(PROMPTS[:1], callback_on_step_end=lambda pipe, i, t, tensors: {"latents": torch.zeros(
        tensors["latents"].shape)}, **settings).images
    assert zeroed.abs().sum() == 0


def test_a_wrong_size_an_unknown_callback_input_and_a_seed_with_a_generator_are_refused(diffusers_pipe):
    with pytest.raises(ParisError, match="trained on 8x8 images"):
        diffusers_pipe(PROMPTS[:1], height=16)
    with pytest.raises(ParisError, match="may name only"):
        diffusers_pipe(PROMPTS[:1], callback_on_step_end=lambda pipe, i, t, tensors: tensors,
                       callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])
    with pytest.raises(ParisError, match="not both"):
        diffusers_pipe(PROMPTS[:1], seed=1, generator=torch.Generator())
    assert diffusers_pipe(PROMPTS[:1], height=8, width=8, num_inference_steps=1).images[0].size == (8, 8)


def test_the_diffusers_pipeline_saves_and_loads_again(diffusers_pipe, tmp_path):
    diffusers_pipe.save_pretrained(str(tmp_path / "resaved"))
    again = DiffusionPipeline.from_pretrained(str(tmp_path / "resaved"), trust_remote_code=True)
    assert again.config.sample == diffusers_pipe.config.sample and again.num_experts == 3
    settings = {"num_inference_steps": 2, "seed": 7, "output_type": "pt"}
    torch.testing.assert_close(again(PROMPTS[:2], **settings).images, diffusers_pipe(PROMPTS[:2], **settings).images,
                               atol=0, rtol=0)
