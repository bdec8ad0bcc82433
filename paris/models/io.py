"""Save and load finished models: config.json + diffusion_pytorch_model.safetensors, the layout diffusers'
ModelMixin reads (so `DiffusersDiT.from_pretrained(folder)` works too). Never unpickles."""

from __future__ import annotations

import contextlib
import dataclasses

from torch import nn

from paris import layout
from paris.config import DiTConfig, RouterConfig, from_dict
from paris.errors import ParisError
from paris.models.dit import DiT
from paris.models.router import Router
from paris.run import RunDir

# class name in config.json -> (model class, its config class); a folder re-saved by diffusers names the
# diffusers face of the same network (paris.models.diffusers_model)
MODELS = {"DiT": (DiT, DiTConfig), "Router": (Router, RouterConfig),
          "DiffusersDiT": (DiT, DiTConfig), "DiffusersRouter": (Router, RouterConfig)}
WEIGHTS = "diffusion_pytorch_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"  # peft's: a LoRA expert's folder (paris.models.lora) holds it, not weights
OLD_ROUTER_WEIGHTS = "pytorch_model.safetensors"  # routers saved before they were diffusers models; still read
RESAVE = "save the model again, or download it again"  # what to do about a damaged weights file


def weights_file(run: RunDir, folder: str) -> str:
    """The weights file of a saved model folder, under the name it was saved with, relative to `run`."""
    current, old = (f"{folder}/{name}" if folder else name for name in (WEIGHTS, OLD_ROUTER_WEIGHTS))
    return old if not run.exists(current) and run.exists(old) else current


def save_pretrained(run: RunDir, folder: str, model: nn.Module, manifest: dict | None = None) -> None:
    """Write `folder`/<weights>, manifest.json (how it was trained), then config.json: last, so a folder
    with a config is complete."""
    run.save_tensors(f"{folder}/{WEIGHTS}", model.state_dict())
    save_config(run, folder, model, manifest)


def save_config(run: RunDir, folder: str, model: nn.Module, manifest: dict | None = None) -> None:
    """manifest.json, then config.json (the network's class and architecture): what completes a model folder
    whose weights are already written."""
    if manifest is not None:
        run.write_json(f"{folder}/manifest.json", manifest)
    run.write_json(f"{folder}/config.json", {"_class_name": type(model).__name__, **dataclasses.asdict(model.architecture)})


def require_pretrained(run: RunDir, folder: str) -> None:
    """Fail with a hint on how to make it when `folder` holds no finished model."""
    if not run.exists(f"{folder}/config.json"):
        raise ParisError(f"no trained model at {run.url}/{folder}; {layout.next_step(folder)}")


def require_weights(run: RunDir, folder: str, what: str = "") -> str:
    """The weights file of `folder` (relative to `run`), or one error saying it is missing, and that a pickle
    beside it (.bin, .pt, ...) is refused; `what` names the setting the folder came from."""
    weights = weights_file(run, folder)
    if run.exists(weights):
        return weights
    if run.exists(f"{folder}/{ADAPTER_CONFIG}".lstrip("/")):
        raise ParisError(f"{what} {run.url}/{folder}".strip().rstrip("/") + " holds a LoRA adapter, not a whole "
                         "network; write one with `paris merge-lora`, or load it with its base (ParisPipeline.from_run)")
    pickles = [f for f in run.list(folder) if f.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    where = f"{what} {run.url}/{folder}".strip().rstrip("/")
    raise ParisError(f"{where} has no {WEIGHTS}" + (
        f", only {', '.join(pickles)}: pickle checkpoints are refused (loading them can run code); convert them "
        "to safetensors with safetensors.torch.save_file" if pickles else
        "; give a folder with config.json and it, such as an expert's final/ or a pipeline's expert_<i>/"))


def load_pretrained(run: RunDir, folder: str, as_class: type | None = None) -> nn.Module:
    """The network saved in `folder`, its weights checked key by key and shape by shape, from safetensors only.
    With `as_class` (a subclass of the saved network: its diffusers face, paris.models.diffusers_model) it is
    built as that class, and a folder holding another network is refused."""
    model_cls, architecture = saved_network(run, folder, as_class)
    weights = require_weights(run, folder)
    with parameters_on_meta():  # no memory and no random initialisation for weights about to be replaced
        model = model_cls(architecture)
    state = run.load_tensors(weights, remedy=RESAVE)
    load_state_dict_strict(model, state, f"{run.url}/{weights}", assign=True)
    return model.eval()


def saved_network(run: RunDir, folder: str, as_class: type | None = None) -> tuple[type, object]:
    """(the class to build, its checked architecture) of the model saved in `folder`, from its config.json;
    `as_class` as in load_pretrained."""
    require_pretrained(run, folder)
    config = run.read_json(f"{folder}/config.json")
    name = config.pop("_class_name", None)
    if name not in MODELS:
        raise ParisError(f"{run.url}/{folder}/config.json names model class {name!r}; expected one of {', '.join(MODELS)}")
    network, config_cls = MODELS[name]
    if as_class is not None and not issubclass(as_class, network):
        raise ParisError(f"{run.url}/{folder} holds a {network.__name__}, which {as_class.__name__} cannot load")
    fields = {key: value for key, value in config.items() if not key.startswith("_")}  # skip diffusers' _version
    return as_class or network, from_dict(config_cls, fields, where=f"{run.url}/{folder}/config.json: ", complete=True)


@contextlib.contextmanager
def parameters_on_meta():
    """Modules built inside have their parameters on the meta device: shapes only, so building is free and
    their initialisation does nothing. Buffers stay real (DiT's fixed position embedding is not saved).
    Load weights into such a model with load_state_dict(..., assign=True)."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def load_state_dict_strict(model: nn.Module, state: dict, where: str, assign: bool = False,
                           keys: set[str] | None = None) -> None:
    """load_state_dict that lists every missing, unexpected, mis-shaped or non-float key in one clear error; with
    `assign`, the model takes the tensors of `state` as its own (no copy unless their float type differs from
    the model's: a bf16 file still loads as the float32 model; for a model built on meta). With `keys`, `state`
    holds exactly those entries of the model (a LoRA's adapter) and the others stay as they are."""
    expected = {k: v for k, v in model.state_dict().items() if keys is None or k in keys}
    # Shapes first: one mis-shaped tensor says more about a wrong config than a list of missing blocks.
    problems = [
        f"{k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}"
        for k, v in expected.items() if k in state and state[k].shape != v.shape
    ]
    problems += [f"{k} is {state[k].dtype}, expected floating point" for k, v in expected.items()
                 if k in state and v.is_floating_point() and not state[k].is_floating_point()]
    problems += [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    if problems:
        raise ParisError(f"weights in {where} do not fit the model: {'; '.join(problems[:8])}"
                         + (f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""))
    if assign:
        state = {k: v.to(expected[k].dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, assign=assign, strict=keys is None)

