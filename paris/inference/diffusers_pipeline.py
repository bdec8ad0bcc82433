"""The mixture of experts as a diffusers pipeline.

    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained("paris-fashion", trust_remote_code=True)
    image = pipe("a photo of a sneaker", num_inference_steps=50, guidance_scale=7.5, seed=0).images[0]

A folder written by `ParisPipeline.save_pretrained` (or `paris convert-release`) is also a diffusers repository:
its model_index.json is diffusers', and its pipeline.py, two lines, takes the class from here (so loading needs
`pip install paris` and trust_remote_code). The components: `expert_0` ... `expert_<K-1>` and `router`
(paris's DiT and Router as diffusers ModelMixins, paris.models.diffusers_model), `text_encoder` and
`tokenizer` (transformers), `vae` (AutoencoderKL; none in pixel space) and `scheduler`, diffusers'
FlowMatchEulerDiscreteScheduler, which integrates the mixture's velocity (paris.inference.velocity). A retired
expert (`paris remove-expert`) is listed as none, and its router weight goes to the others.
Images equal ParisPipeline's for the same seed and settings.
"""

from __future__ import annotations

import dataclasses
import inspect

import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, ImagePipelineOutput

from paris.config import SampleConfig, from_dict
from paris.flow import time_grid
from paris.images import to_pil
from paris.models import diffusers_model  # the components' classes: imported, so diffusers can resolve them
from paris.models.encoders import IdentityAutoencoder, StableDiffusionVAE, TextEncoder
from paris.run import RunDir
from paris.inference.mixture import ExpertPool, Mixture
from paris.inference.sampler import initial_noise
from paris.inference.velocity import encode_prompts, velocity_field

PIPELINE_FILE = '''"""Paris (arXiv 2510.03434) for diffusers; needs `pip install paris`. Written by paris's save_pretrained."""
from paris.inference.diffusers_pipeline import with_experts

ParisDiffusionPipeline = with_experts({num_experts})
'''


class ParisDiffusionPipeline(DiffusionPipeline):
    _optional_components = ["router", "vae"]

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

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, seed: int | None = None, strategy: str | None = None,
                 route_every: int | None = None, guidance_mode: str | None = None, output_type: str = "pil",
                 return_dict: bool = True):
        """Images for `prompt` (one each). Every option left out takes the sampling settings saved with the
        pipeline (`config.sample`, as ParisPipeline does); `seed` seeds the initial noise exactly as paris does."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        given = {"steps": num_inference_steps, "guidance": guidance_scale, "seed": seed, "strategy": strategy,
                 "route_every": route_every, "guidance_mode": guidance_mode}
        settings = {**self.config.sample, **{k: v for k, v in given.items() if v is not None}}
        sample = from_dict(SampleConfig, settings, "sample.")
        mixture = self.mixture()
        generator = torch.Generator().manual_seed(sample.seed)
        velocity = velocity_field(mixture, encode_prompts(mixture, prompts), sample, generator)
        x = initial_noise(mixture, len(prompts), generator)
        # paris's time grid, shifted by the scheduler's own `shift` (set from sample.shift when saved).
        self.scheduler.set_timesteps(sigmas=time_grid(sample.steps)[:-1].tolist(), device=x.device)
        for i, timestep in enumerate(self.progress_bar(self.scheduler.timesteps)):
            v = velocity(x, float(self.scheduler.sigmas[i]))
            x = self.scheduler.step(v, timestep, x).prev_sample
        images = mixture.autoencoder.decode(x.float().cpu())
        if output_type == "pil":
            images = [to_pil(image) for image in images]
        elif output_type == "np":
            images = ((images + 1) / 2).permute(0, 2, 3, 1).numpy()
        return ImagePipelineOutput(images=images) if return_dict else (images,)


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


def write_repository_files(out: RunDir, num_experts: int, has_router: bool, text_encoder, tokenizer, has_vae: bool,
                           config: dict, sample: SampleConfig, retired: list[int] = ()) -> None:
    """What makes a pipeline folder a diffusers repository: model_index.json, pipeline.py and the scheduler."""
    import diffusers

    FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=sample.shift).save_pretrained(out.path("scheduler"))
    out.write_text("pipeline.py", PIPELINE_FILE.format(num_experts=num_experts))
    index = {
        "_class_name": ["pipeline", "ParisDiffusionPipeline"], "_diffusers_version": diffusers.__version__,
        **{f"expert_{k}": [None, None] if k in retired else [diffusers_model.__name__, "DiffusersDiT"]
           for k in range(num_experts)},
        "router": [diffusers_model.__name__, "DiffusersRouter"] if has_router else [None, None],
        "text_encoder": ["transformers", type(text_encoder).__name__],
        "tokenizer": ["transformers", type(tokenizer).__name__],
        "vae": ["diffusers", "AutoencoderKL"] if has_vae else [None, None],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "latent_shape": list(config["latent_shape"]), "latent_scale": config["latent_scale"],
        "text_encoder_name": config["text_encoder"], "max_tokens": config["max_tokens"],
        "sample": dataclasses.asdict(sample),
    }
    out.write_json("model_index.json", index)
