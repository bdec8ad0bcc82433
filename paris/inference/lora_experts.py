"""Experts published as a LoRA (`paris train-expert --lora`): loaded as their base, checked by the sha256 its
adapter was trained on, plus their adapter; each at the strength sampling asks for (sample.lora_scale); and
merged into an ordinary expert folder by `paris merge-lora`.
"""

from __future__ import annotations

from torch import nn

from paris import layout
from paris.config import lora_strengths
from paris.errors import ParisError
from paris.models.io import load_pretrained, save_pretrained, saved_network, weights_file
from paris.models.lora import is_lora_folder, load_adapter, merged
from paris.outputs import check_apart, folder_written_whole
from paris.run import RunDir
from paris.train.init_from import load_initial_weights, resolve


def load_expert(run: RunDir, folder: str) -> nn.Module:
    """The expert saved in `folder` of `run`: a whole network as saved, a LoRA as its base plus its adapter. A
    LoRA whose base is missing, or is another file than the one it was trained on, is refused."""
    if not is_lora_folder(run, folder):
        return load_pretrained(run, folder)
    lora = run.read_json(f"{folder}/manifest.json").get("lora", {})
    base = resolve(run, lora.get("base", ""))
    weights = weights_file(base, "")
    if not lora.get("base_sha256") or not base.exists(weights):
        raise ParisError(f"{run.url}/{folder} is a LoRA of {base.url}, which is missing; put the base it was "
                         f"trained on there (sha256 {lora.get('base_sha256', '?')[:16]}...)")
    found = base.sha256(weights)
    if found != lora["base_sha256"]:
        raise ParisError(f"{run.url}/{folder} is a LoRA of {base.url}, but that base has changed (sha256 "
                         f"{found[:16]}..., trained on {lora['base_sha256'][:16]}...); put the base it was trained "
                         "on back there")
    model_cls, architecture = saved_network(run, folder)
    model = model_cls(architecture)
    load_initial_weights(run, model, lora["base"])
    return load_adapter(run, folder, model).eval()


def check_strengths(lora_scale: str | None, num_experts: int, lora_experts: set[int]) -> dict[int, float]:
    """sample.lora_scale as {expert: strength}, refused where it names an expert that is not there or not a LoRA."""
    strengths = lora_strengths(lora_scale)
    for k in strengths:
        if not 0 <= k < num_experts:
            raise ParisError(f"lora_scale names expert {k}, but the model has experts 0..{num_experts - 1}",
                             "lora_scale")
        if k not in lora_experts:
            raise ParisError(f"lora_scale names expert {k}, which is not a LoRA expert (LoRA experts here: "
                             f"{', '.join(map(str, sorted(lora_experts))) or 'none'})", "lora_scale")
    return strengths


def merge_lora(run: RunDir, expert: int, out: str, strength: float = 1.0) -> dict:
    """`paris merge-lora`: write LoRA expert `expert` of `run` as an ordinary expert folder `out` (config.json +
    diffusion_pytorch_model.safetensors), its adapter added into its base at `strength`; returns its manifest."""
    folder = layout.final(layout.expert(expert))
    if not is_lora_folder(run, folder):
        raise ParisError(f"expert {expert} of {run.url} is not a LoRA expert ({folder} has no adapter); "
                         "there is nothing to merge")
    check_apart(out, [f"{run.url}/{folder}"], "--out")
    manifest = {**run.read_json(f"{folder}/manifest.json"), "merged_strength": strength}
    model = merged(load_expert(run, folder), strength)
    with folder_written_whole(out) as temporary:
        save_pretrained(RunDir(temporary), "", model, manifest)
    return manifest
