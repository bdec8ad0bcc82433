"""The README.md of a pipeline folder: the Hub's model card, YAML front matter and a body saying what the folder
holds and how to load it. Built from what the pipeline knows; what it does not know is not written.

library_name is diffusers: the Hub knows that library (a filter, and model_index.json marks the folder as one),
while "paris" is not one of its libraries, so paris is a tag. The license is the pipeline config's `license`
when it has one, else `other`: who may use the weights depends on the data they were trained on, which paris
does not record (its own code is Apache-2.0).
"""

from __future__ import annotations

import dataclasses

import yaml
from torch import nn

from paris.config import SampleConfig

TAGS = ["paris", "mixture-of-experts", "diffusion", "text-to-image", "diffusion-transformer", "flow-matching"]
AUTOENCODERS = {"identity": "pixel space (no autoencoder)", "sd-vae": "the latents of Stable Diffusion's VAE (vae/)"}
CITATION = """```bibtex
@article{paris2025,
  title   = {Paris: A Decentralized Trained Open-Weight Diffusion Model},
  author  = {{Bagel Labs}},
  journal = {arXiv preprint arXiv:2510.03434},
  year    = {2025}
}
@inproceedings{mcallister2025ddm,
  title     = {Decentralized Diffusion Models},
  author    = {McAllister, David and Tancik, Matthew and Song, Jiaming and Kanazawa, Angjoo},
  booktitle = {CVPR},
  year      = {2025}
}
```"""


@dataclasses.dataclass(frozen=True)
class Network:
    """What the card says of one saved network: its class, architecture and size."""
    kind: str
    architecture: dict
    parameters: int

    @classmethod
    def of(cls, model: nn.Module) -> "Network":
        return cls(type(model).__name__, dataclasses.asdict(model.architecture),
                   sum(p.numel() for p in model.parameters()))

    def describe(self) -> str:
        fields = ", ".join(f"{key} {value}" for key, value in self.architecture.items())
        return f"{self.kind} ({fields})"


def model_card(name: str, config: dict, sample: SampleConfig, experts: dict[int, Network],
               router: Network | None, retired: list[int] = ()) -> str:
    """README.md for the pipeline folder `name`: `config` is the pipeline's (paris.inference.pipeline), `experts`
    the saved experts by index, `retired` those not saved."""
    front = {"library_name": "diffusers", "pipeline_tag": "text-to-image", "license": config.get("license", "other"),
             "tags": TAGS}
    sections = [*_introduction(name, config["num_experts"]),
                _experts(config, experts, retired), _router(router), _inputs(config), _sampling(sample),
                _usage(name), _license(config), "## Citation\n\n" + CITATION]
    return f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n\n" + "\n\n".join(sections) + "\n"


def _introduction(name: str, num_experts: int) -> list[str]:
    if num_experts == 1:
        return [f"# {name}: a single Paris diffusion model",
                "One diffusion transformer, sampled as paris samples a Paris mixture (arXiv 2510.03434). Written by "
                "paris's `save_pretrained`."]
    return [f"# {name}: a Paris mixture of {num_experts} diffusion experts",
            "Text-to-image diffusion in the way of Paris (arXiv 2510.03434): each expert, a diffusion transformer, "
            "was trained alone on one cluster of the data, and a router weighs the experts at every denoising step. "
            "Written by paris's `save_pretrained`."]


def _experts(config: dict, experts: dict[int, Network], retired: list[int]) -> str:
    sizes = config.get("cluster_sizes") or []  # a training run's partition: images per cluster; else not known
    sized = len(sizes) == config["num_experts"]
    header = "| expert | parameters |" + (" training images (its cluster) |" if sized else "")
    rows = [f"| expert_{k} | " + (f"{experts[k].parameters:,} |" if k in experts else "retired: not saved |")
            + (f" {sizes[k]:,} |" if sized else "") for k in range(config["num_experts"])]
    kinds = sorted({network.describe() for network in experts.values()})
    lines = ["## Experts", "", header, "|---" * (3 if sized else 2) + "|", *rows, "",
             "Architecture: " + "; ".join(kinds) + "."]
    if retired:
        lines.append(f"Retired experts ({', '.join(map(str, retired))}) are not loaded; their router weight goes "
                     "to the others.")
    return "\n".join(lines)


def _router(router: Network | None) -> str:
    if router is None:
        return "## Router\n\nNone: a single model, which denoises every image alone."
    sees = ("the noisy latent, the time and the mean-pooled prompt" if router.architecture["text_dim"]
            else "the noisy latent and the time, not the prompt")
    return (f"## Router\n\n{router.describe()}, {router.parameters:,} parameters. It weighs the "
            f"{router.architecture['num_experts']} experts from {sees}.")


def _inputs(config: dict) -> str:
    space = AUTOENCODERS.get(config["autoencoder"], config["autoencoder"])
    return (f"## Images and text\n\nThe experts denoise {'x'.join(map(str, config['latent_shape']))} tensors in "
            f"{space}. Prompts are read by the {config['text_encoder']} text encoder (text_encoder/, tokenizer/), "
            f"at most {config['max_tokens']} tokens.")


def _sampling(sample: SampleConfig) -> str:
    rows = [f"| {key} | {value} |" for key, value in dataclasses.asdict(sample).items()]
    return "\n".join(["## Sampling defaults", "", "What a call uses unless told otherwise (paris's SampleConfig).", "",
                      "| setting | value |", "|---|---|", *rows])


def _usage(name: str) -> str:
    return f"""## Use

With paris (`pip install paris`), from this folder or its Hub download:

```python
from paris.inference.pipeline import ParisPipeline

pipe = ParisPipeline.from_pretrained("{name}")
images = pipe(["a photo of a sneaker"])  # PIL images, drawn with the sampling defaults above
```

```bash
paris generate {name} -p "a photo of a sneaker"
```

With diffusers (paris installed too: the pipeline's code, pipeline.py, comes from it):

```python
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("{name}", trust_remote_code=True)
image = pipe("a photo of a sneaker").images[0]
```"""


def _license(config: dict) -> str:
    if "license" in config:
        return f"## License\n\n{config['license']}."
    return ("## License\n\nNot recorded: the terms of these weights depend on the data they were trained on. Set "
            "`license` above before publishing them. paris, the code, is Apache-2.0.")
