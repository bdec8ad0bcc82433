"""The mixture of experts as a diffusers pipeline.

    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained("paris-fashion", trust_remote_code=True)
    images = pipe(["a photo of a sneaker", "a photo of a bag"], negative_prompt="blurry", num_images_per_prompt=2,
                  generator=torch.Generator().manual_seed(0)).images

A folder written by `ParisPipeline.save_pretrained` (or `paris convert-release`) is also a diffusers repository:
its model_index.json is diffusers', and its pipeline.py, two lines, takes the class from here (so loading needs
`pip install paris` and trust_remote_code). The components: `expert_0` ... `expert_<K-1>` and `router`
(paris's DiT and Router as diffusers ModelMixins, paris.models.diffusers_model), `text_encoder` and
`tokenizer` (transformers), `vae` (AutoencoderKL; none in pixel space) and `scheduler`, diffusers'
FlowMatchEulerDiscreteScheduler or FlowMatchHeunDiscreteScheduler (`sample.sampler` euler or heun,
paris.inference.diffusers_schedulers), which integrates the mixture's velocity (paris.inference.velocity). A
retired expert (`paris remove-expert`) is listed as none, and its router weight goes to the others.

A call takes diffusers' arguments with diffusers' meaning: negative_prompt (in place of classifier-free
guidance's empty prompt), num_images_per_prompt, generator (one, or one per image: image i's noise is drawn
from generator i, so a list draws what single calls draw), latents (the noise at t=1), height and width (only
the trained size), output_type pil / np / pt ([0, 1]) / latent, return_dict, and callback_on_step_end (called
as callback(pipe, i, t, {"latents": ...}) after every scheduler step; it may return new latents, or set
pipe._interrupt to skip the remaining steps). paris's settings keep their names (seed, when no generator is
given; sampler, strategy, route_every, guidance_mode, min_weight, quantize); every one left out is the one saved with
the pipeline (`config.sample`, as ParisPipeline's). Images equal ParisPipeline's for the same noise and settings.
`quantize` int8 or int8-dynamic quantises the experts in place, as `pipe.to(dtype)` would change them: later calls
keep it, and the weights as trained come back only by loading the pipeline again.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

from paris.config import SampleConfig
from paris.errors import ParisError
from paris.images import to_pil
from paris.models import diffusers_model  # the components' classes: imported, so diffusers can resolve them
from paris.models.encoders import IdentityAutoencoder, StableDiffusionVAE, TextEncoder
from paris.models.quantize import quantization_of
from paris.run import RunDir
from paris.inference.diffusers_schedulers import SCHEDULERS, scheduler_for, set_paris_grid
from paris.inference.mixture import ExpertPool, Mixture
from paris.inference.sampler import generators, initial_noise
from paris.inference.velocity import encode_prompts, velocity_field

PIPELINE_FILE = '''"""Paris (arXiv 2510.03434) for diffusers; needs `pip install paris`. Written by paris's save_pretrained."""
from paris.inference.diffusers_pipeline import with_experts

ParisDiffusionPipeline = with_experts({num_experts})
'''

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


class ParisDiffusionPipeline(DiffusionPipeline):
    _optional_components = ["router", "vae"]
    _callback_tensor_inputs = ["latents"]

    def __init__(self, text_encoder, tokenizer, scheduler, router=None, vae=None, latent_shape=(4, 32, 32),
                 latent_scale: float = 0.18215, text_encoder_name: str = "clip", max_tokens: int = 77,
                 sample: dict | None = None, **experts):
        super().__init__()
        self.register_modules(text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler, router=router,
                              vae=vae, **experts)
        self.register_to_config(latent_shape=list(latent_shape), latent_scale=latent_scale,
                                text_encoder_name=text_encoder_name, max_tokens=max_tokens, sample=sample or {})

    @property
    def num_experts(self) -> int:
        return sum(name.startswith("expert_") for name in self.config)

    @property
    def vae_scale_factor(self) -> int:
        """How many pixels a latent stands for along each side: 1 in pixel space."""
        return 1 if self.vae is None else 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    def quantized_as(self) -> str | None:
        """How an earlier call quantised the experts (in place, so it stays), or None: they are as trained."""
        held = {quantization_of(model) for k in range(self.num_experts)
                if (model := getattr(self, f"expert_{k}")) is not None} - {"none"}
        return held.pop() if held else None

    def mixture(self) -> Mixture:
        """The components as paris's sampler holds them (no copies: the same modules)."""
        experts = [getattr(self, f"expert_{k}") for k in range(self.num_experts)]
        retired = {k for k, model in enumerate(experts) if model is None}
        device = str(next(model for model in experts if model is not None).device)
        text = TextEncoder(self.text_encoder, self.tokenizer, self.config.text_encoder_name, self.config.max_tokens,
                           device)
        image = IdentityAutoencoder() if self.vae is None else StableDiffusionVAE(self.vae, self.config.latent_scale,
                                                                                  device)
        pool = ExpertPool([lambda model=model: model for model in experts], device=device)
        return Mixture(pool, self.router, text, image, tuple(self.config.latent_shape), retired=retired)

    def save_pretrained(self, save_directory: str, **kwargs) -> None:
        """diffusers' save_pretrained, and what makes the folder load again with trust_remote_code: pipeline.py,
        and model_index.json naming it (diffusers writes the bare class name, then looks for it in diffusers) and
        the strictly loading classes of the text encoder and VAE."""
        if self.quantized_as():
            raise ParisError(f"the experts are {self.quantized_as()} (a call with quantize changed them in place); "
                             "save the pipeline as loaded, before sampling with quantize")
        super().save_pretrained(save_directory, **kwargs)
        out = RunDir(str(save_directory))
        out.write_text("pipeline.py", PIPELINE_FILE.format(num_experts=self.num_experts))
        index = out.read_json("model_index.json")
        strict = {name: diffusers_model.strict_component(getattr(self, name)) for name in ("text_encoder", "vae")
                  if getattr(self, name) is not None}
        out.write_json("model_index.json", {**index, **strict, "_class_name": ["pipeline", "ParisDiffusionPipeline"]})

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], height: int | None = None, width: int | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 negative_prompt: str | list[str] | None = None, num_images_per_prompt: int = 1,
                 generator: torch.Generator | list[torch.Generator] | None = None, latents: torch.Tensor | None = None,
                 output_type: str = "pil", return_dict: bool = True, callback_on_step_end: Callable | None = None,
                 callback_on_step_end_tensor_inputs: list[str] = ("latents",), *, seed: int | None = None,
                 sampler: str | None = None, strategy: str | None = None, route_every: int | None = None,
                 guidance_mode: str | None = None, min_weight: float | None = None, quantize: str | None = None):
        """Images for `prompt`, `num_images_per_prompt` each (the module's docstring says what each argument
        means). Every paris setting left out (None) is the one saved with the pipeline."""
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        self.check_inputs(prompt, negative_prompt, num_images_per_prompt, height, width, output_type,
                          callback_on_step_end_tensor_inputs, seed, generator)
        prompts, negative_prompts = repeat_prompts(prompt, negative_prompt, num_images_per_prompt)
        sample = SampleConfig(**self.config.sample).updated(
            steps=num_inference_steps, guidance=guidance_scale, seed=seed, sampler=sampler, strategy=strategy,
            route_every=route_every, guidance_mode=guidance_mode, min_weight=min_weight,
            quantize=quantize or self.quantized_as())
        self._guidance_scale, self._interrupt = sample.guidance, False
        mixture = self.mixture()
        generator, router_generator = generators(sample, generator)  # as paris's generate draws them
        velocity = velocity_field(mixture, encode_prompts(mixture, prompts, negative_prompts), sample,
                                  router_generator)
        latents = self.prepare_latents(mixture, len(prompts), generator, latents)
        scheduler = scheduler_for(sample.sampler, self.scheduler, requested=sampler is not None)
        set_paris_grid(scheduler, sample.steps, latents.device)
        latents = self.denoise(velocity, latents, scheduler, callback_on_step_end, callback_on_step_end_tensor_inputs)
        images = latents if output_type == "latent" else postprocess(mixture, latents, output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def check_inputs(self, prompt, negative_prompt, num_images_per_prompt: int, height: int | None,
                     width: int | None, output_type: str, callback_on_step_end_tensor_inputs, seed, generator) -> None:
        """The arguments diffusers' conventions give (paris's settings are checked by SampleConfig)."""
        num_prompts = 1 if isinstance(prompt, str) else len(prompt)
        if not isinstance(negative_prompt, (str, type(None))) and len(negative_prompt) not in (1, num_prompts):
            raise ParisError(f"give one negative_prompt, or one per prompt ({num_prompts}); got {len(negative_prompt)}")
        if num_images_per_prompt < 1:
            raise ParisError(f"num_images_per_prompt must be at least 1, got {num_images_per_prompt}")
        trained = [side * self.vae_scale_factor for side in self.config.latent_shape[1:]]
        if [height or trained[0], width or trained[1]] != trained:
            raise ParisError(f"the experts were trained on {trained[0]}x{trained[1]} images and draw only those; "
                             f"got height={height}, width={width} (leave them out)")
        if output_type not in OUTPUT_TYPES:
            raise ParisError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}; got {output_type!r}")
        unknown = [name for name in callback_on_step_end_tensor_inputs if name not in self._callback_tensor_inputs]
        if unknown:
            raise ParisError(f"callback_on_step_end_tensor_inputs may name only {self._callback_tensor_inputs}; "
                             f"got {unknown}")
        if seed is not None and generator is not None:
            raise ParisError("give a seed or a generator, not both (the seed seeds the generator)")

    def prepare_latents(self, mixture: Mixture, num_images: int, generator, latents: torch.Tensor | None):
        """The latents at t=1: `latents` if given, else noise from `generator` (one, or one per image)."""
        if latents is None:
            return initial_noise(mixture, num_images, generator)
        expected = (num_images, *mixture.latent_shape)
        if tuple(latents.shape) != expected:
            raise ParisError(f"latents must have shape {list(expected)} (images, then the latent shape); "
                             f"got {list(latents.shape)}")
        return latents.to(mixture.experts.device)

    def denoise(self, velocity, latents: torch.Tensor, scheduler, callback: Callable | None,
                callback_inputs: list[str]) -> torch.Tensor:
        """diffusers' denoising loop: one velocity evaluation and one scheduler step per timestep (Heun's
        scheduler lists each interior time twice: predictor, then corrector), then the callback if any."""
        self._num_timesteps = len(scheduler.timesteps)
        for i, t in enumerate(self.progress_bar(scheduler.timesteps)):
            if self.interrupt:
                continue
            v = velocity(latents, float(scheduler.sigmas[i]))  # sigma is paris's t
            latents = scheduler.step(v, t, latents, return_dict=False)[0]
            if callback is not None:
                tensors = {"latents": latents}  # the tensors a callback may ask for: _callback_tensor_inputs
                outputs = callback(self, i, t, {name: tensors[name] for name in callback_inputs})
                latents = outputs.pop("latents", latents)
        return latents


def repeat_prompts(prompt, negative_prompt, num_images_per_prompt: int) -> tuple[list[str], list[str] | None]:
    """One prompt (and negative prompt, if one per prompt) per image, each prompt's images side by side."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    negatives = [negative_prompt] if isinstance(negative_prompt, str) else negative_prompt
    repeat = lambda texts: [text for text in texts for _ in range(num_images_per_prompt)]  # noqa: E731
    if negatives is not None and len(negatives) == len(prompts):
        negatives = repeat(negatives)
    return repeat(prompts), negatives


def postprocess(mixture: Mixture, latents: torch.Tensor, output_type: str):
    """The decoded images as diffusers gives them: PIL images, or in [0, 1] NHWC arrays (np) or NCHW tensors (pt)."""
    images = mixture.autoencoder.decode(latents.float().cpu())  # in [-1, 1]
    if output_type == "pil":
        return [to_pil(image) for image in images]
    images = (images + 1) / 2
    return images.permute(0, 2, 3, 1).numpy() if output_type == "np" else images


def with_experts(num_experts: int) -> type:
    """ParisDiffusionPipeline for `num_experts` experts. diffusers reads a pipeline's components from the
    signature of its __init__, so this class names expert_0 ... expert_<K-1> there."""
    base = inspect.signature(ParisDiffusionPipeline.__init__)
    named = [p for p in base.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    experts = [inspect.Parameter(f"expert_{k}", inspect.Parameter.KEYWORD_ONLY, default=None)
               for k in range(num_experts)]  # None: retired

    def __init__(self, *args, **kwargs):
        retired = {e.name: None for e in experts}  # diffusers passes no argument for an empty component
        ParisDiffusionPipeline.__init__(self, *args, **{**retired, **kwargs})

    __init__.__signature__ = base.replace(parameters=named + experts)
    # Optional components, so that a retired expert may be none (diffusers reads other defaults as settings).
    optional = [*ParisDiffusionPipeline._optional_components, *(e.name for e in experts)]
    return type("ParisDiffusionPipeline", (ParisDiffusionPipeline,), {"__init__": __init__, "_optional_components": optional})


def write_repository_files(out: RunDir, num_experts: int, has_router: bool, text_encoder, tokenizer, vae,
                           config: dict, sample: SampleConfig, retired: list[int] = ()) -> None:
    """What makes a pipeline folder a diffusers repository: model_index.json, pipeline.py and the scheduler."""
    import diffusers

    scheduler = SCHEDULERS[sample.sampler]  # diffusers' scheduler of the saved sampler
    scheduler(num_train_timesteps=1000, shift=sample.shift).save_pretrained(out.path("scheduler"))
    out.write_text("pipeline.py", PIPELINE_FILE.format(num_experts=num_experts))
    index = {
        "_class_name": ["pipeline", "ParisDiffusionPipeline"], "_diffusers_version": diffusers.__version__,
        **{f"expert_{k}": [None, None] if k in retired else [diffusers_model.__name__, "DiffusersDiT"]
           for k in range(num_experts)},
        "router": [diffusers_model.__name__, "DiffusersRouter"] if has_router else [None, None],
        "text_encoder": diffusers_model.strict_component(text_encoder),
        "tokenizer": ["transformers", type(tokenizer).__name__],
        "vae": diffusers_model.strict_component(vae) if vae is not None else [None, None],
        "scheduler": ["diffusers", scheduler.__name__],
        "latent_shape": list(config["latent_shape"]), "latent_scale": config["latent_scale"],
        "text_encoder_name": config["text_encoder"], "max_tokens": config["max_tokens"],
        "sample": dataclasses.asdict(sample),
    }
    out.write_json("model_index.json", index)
