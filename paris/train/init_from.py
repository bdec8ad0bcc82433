"""Start a training job from a finished model instead of random weights (`--init-from`).

The start can be a seed trained briefly on all the data (`paris train-seed`, as in Branch-Train-Merge and
Diffusion Soup), another run's final/ folder, or one expert_<i>/ folder of a release (as HDDM starts its
experts from a pretrained DiT): any folder with config.json and the model's safetensors file. Like a public
pretrained model it is only a starting point: the job reads it once and never depends on it again.
"""

from __future__ import annotations

from torch import nn

from paris.models.io import RESAVE, load_state_dict_strict, require_weights
from paris.inference.release import convert_state
from paris.run import RunDir

# Re-initialised with `init_fresh_head`: what connects a model to a new text encoder and a new output (HDDM).
FRESH_HEAD = {"DiT": ("text_proj.", "final_layer."), "Router": ("head.",)}
# A guidance-distilled student's guidance input (paris.models.dit), which a start made without one lacks.
GUIDANCE_INPUT = "g_embedder."


def resolve(run: RunDir, init_from: str) -> RunDir:
    """The folder of `init_from`: a URL or an absolute path as given, a relative path inside the run."""
    if "://" in init_from or init_from.startswith("/"):
        return RunDir(init_from)
    return RunDir(f"{run.url}/{init_from}")


def load_initial_weights(run: RunDir, model: nn.Module, init_from: str, fresh_head: bool = False) -> dict:
    """Copy the weights of `init_from` into `model` (strictly: every mismatch is listed in one error) and return
    where they came from and how many training samples they hold (0 when unknown, e.g. a release)."""
    source = resolve(run, init_from)
    weights = require_weights(source, "", "--init-from")
    state = source.load_tensors(weights, remedy=RESAVE)
    prefixes = FRESH_HEAD[type(model).__name__] if fresh_head else ()
    config = source.read_json("config.json") if source.exists("config.json") else {}
    if isinstance(config, dict) and not config.get("_class_name"):
        # a network of the public release: its own tensor names
        state = convert_state(state, model, f"--init-from {source.url}/{weights}", skip=prefixes)
    if fresh_head:  # the model's own random initialisation stays for these, whatever their shape in the start
        state = {k: v for k, v in state.items() if not k.startswith(prefixes)}
        state.update({k: v for k, v in model.state_dict().items() if k.startswith(prefixes)})
    if not any(k.startswith(GUIDANCE_INPUT) for k in state):  # a start without one: the model's own, without effect
        state.update({k: v for k, v in model.state_dict().items() if k.startswith(GUIDANCE_INPUT)})
    load_state_dict_strict(model, state, f"--init-from {source.url}")
    manifest = source.read_json("manifest.json") if source.exists("manifest.json") else {}
    return {"init_from": source.url, "init_samples": int(manifest.get("samples_seen", 0)) + int(manifest.get("init_samples", 0))}


def base_identity(run: RunDir, init_from: str) -> dict:
    """What a LoRA expert's adapter was trained on: its base as given, where that is, and the sha256 of its weights
    file (a different file at the same place is refused when the expert loads: paris.inference.lora_experts)."""
    source = resolve(run, init_from)
    return {"base": init_from, "base_url": source.url,
            "base_sha256": source.sha256(require_weights(source, "", "--init-from"))}
