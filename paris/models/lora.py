"""An expert as a LoRA of another model (join cheaply): low-rank adapters (peft) on the linears of its DiT blocks,
the base's weights frozen. Saved as peft saves one, adapter_model.safetensors + adapter_config.json, beside the
config.json of the network it adapts, so peft's own `PeftModel.from_pretrained(DiT(...), folder)` reads it too.
"""

from __future__ import annotations

import copy
import re

from torch import nn

from paris.errors import ParisError
from paris.models.io import ADAPTER_CONFIG, RESAVE, load_state_dict_strict, parameters_on_meta, save_config
from paris.run import RunDir

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER = "default"  # peft's name for a model's one adapter
PEFT_PREFIX = "base_model.model."  # how PeftModel.save_pretrained names the tensors of its file


def peft():
    """peft, imported when a LoRA is first used: it takes seconds. Where torchao is installed peft imports it; its
    import noise is filtered as for any model (paris.models.quantize.quiet_torchao_imports)."""
    import peft
    import peft.tuners.lora

    return peft


def lora_config(rank: int, targets: list[str], base: str | None = None):
    """`rank` adapters on the block linears `targets` (DiT names: attn.q, mlp.0, ...); alpha = rank, so strength 1
    adds B @ A as trained."""
    # Whole names: a bare "mlp.0" would also catch the timestep embedder's mlp.0.
    pattern = r"blocks\.\d+\.(" + "|".join(re.escape(target) for target in targets) + ")"
    return peft().LoraConfig(r=rank, lora_alpha=rank, target_modules=pattern, base_model_name_or_path=base)


def attach(model: nn.Module, config) -> nn.Module:
    """`model` with the LoRA adapters of `config` (a peft LoraConfig) attached, in place: only they train, and they
    start adding nothing (B = 0)."""
    return peft().inject_adapter_in_model(config, model, adapter_name=ADAPTER)


def is_lora(model: nn.Module) -> bool:
    return hasattr(model, "peft_config")  # what attach leaves on the model


def lora_layers(model: nn.Module) -> list[nn.Module]:
    return [module for module in model.modules() if isinstance(module, peft().tuners.lora.LoraLayer)]


def is_lora_folder(run: RunDir, folder: str) -> bool:
    """Whether `folder` holds a LoRA expert (its adapter alone) rather than a whole network."""
    return run.exists(f"{folder}/{ADAPTER_CONFIG}")


def save_adapter(run: RunDir, folder: str, model: nn.Module, manifest: dict | None = None) -> None:
    """Write `model`'s adapter as peft does, then manifest.json and config.json (last: the folder is complete)."""
    state = peft().get_peft_model_state_dict(model, adapter_name=ADAPTER, save_embedding_layers=False)
    run.save_tensors(f"{folder}/{ADAPTER_WEIGHTS}", {PEFT_PREFIX + key: value for key, value in state.items()})
    config = model.peft_config[ADAPTER].to_dict()
    run.write_json(f"{folder}/{ADAPTER_CONFIG}", {key: sorted(value) if isinstance(value, set) else value
                                                  for key, value in config.items()})
    save_config(run, folder, model, manifest)


def load_adapter(run: RunDir, folder: str, model: nn.Module) -> nn.Module:
    """`model`, the base, with the adapter saved in `folder` attached (in place), every tensor checked."""
    saved = run.read_json(f"{folder}/{ADAPTER_CONFIG}")
    try:
        config = peft().LoraConfig(r=saved["r"], lora_alpha=saved["lora_alpha"], target_modules=saved["target_modules"],
                            base_model_name_or_path=saved.get("base_model_name_or_path"))
    except (KeyError, TypeError, ValueError) as e:
        raise ParisError(f"{run.url}/{folder}/{ADAPTER_CONFIG} is not a LoRA config paris can read ({e}); "
                         "train the expert again") from None
    attach(model, config)
    state = run.load_tensors(f"{folder}/{ADAPTER_WEIGHTS}", remedy=RESAVE)
    # peft's file names leave out the adapter's name, which the attached layers hold theirs under
    state = {re.sub(r"\.(lora_[AB])\.", rf".\1.{ADAPTER}.", key.removeprefix(PEFT_PREFIX)): value
             for key, value in state.items()}
    keys = {key for key in model.state_dict() if ".lora_" in key}
    load_state_dict_strict(model, state, f"{run.url}/{folder}/{ADAPTER_WEIGHTS}", keys=keys)
    return model


def set_strength(model: nn.Module, strength: float) -> None:
    """Scale the adapter of LoRA `model` to `strength` of what it learned: 0 is the base's output exactly."""
    for layer in lora_layers(model):
        layer.set_scale(ADAPTER, strength)


def merged(model: nn.Module, strength: float = 1.0) -> nn.Module:
    """An ordinary network equal to LoRA `model` at `strength`: each adapter added into the weight it adapts."""
    work = copy.deepcopy(model)
    set_strength(work, strength)
    for layer in lora_layers(work):
        layer.merge(adapter_names=[ADAPTER])
    state = {key.replace(".base_layer.", "."): value for key, value in work.state_dict().items() if ".lora_" not in key}
    with parameters_on_meta():
        plain = type(model)(model.architecture)
    load_state_dict_strict(plain, state, "the merged LoRA", assign=True)
    return plain.eval()
