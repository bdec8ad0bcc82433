"""The public Paris release (Bagel Labs, arXiv 2510.03434) read as paris models.

The release, as published on the model hub:
    model_index.json (DDMPipeline), config.json (num_experts, image_size, num_channels, vae_name, ...)
    expert_<i>/config.json + diffusion_pytorch_model.safetensors     router/config.json + pytorch_model.safetensors
    vae/ (AutoencoderKL), text_encoder/ (CLIPTextModel), tokenizer/ (CLIPTokenizer)
Config keys are those of the published files. Tensor names come from a third-party port that loads the
weights with strict=False, so here every tensor is mapped by an explicit table and shape-checked, and a
file that does not fit is refused with one error listing every unmapped, missing and mis-shaped tensor.
"""

from __future__ import annotations

import hashlib
import re
import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from paris import tensor_file
from paris.cache import machine_cache
from paris.config import DiTConfig, Positive, PositiveFloat, RouterConfig, from_dict
from paris.errors import ParisError
from paris.models.dit import DiT
from paris.models.io import parameters_on_meta
from paris.models.layers import sincos_2d
from paris.models.router import Router
from paris.run import RunDir

EXPERT_WEIGHTS, ROUTER_WEIGHTS = "diffusion_pytorch_model.safetensors", "pytorch_model.safetensors"
# The start of a release tensor name -> paris's (block indices carry over: layers.3. -> blocks.3.).
MODULES = (("patch_embed.", "x_embedder.proj."), ("time_embed.", "t_embedder."), ("layers.", "blocks."))
# Inside an attention, nn.MultiheadAttention's names -> paris's: the fused q|k|v input projection is split
# into q (its first third of rows) and kv (the other two thirds, k then v); out_proj is proj.
ATTENTION = {"in_proj_weight": ("q.weight", "kv.weight"), "in_proj_bias": ("q.bias", "kv.bias"),
             "out_proj.weight": ("proj.weight",), "out_proj.bias": ("proj.bias",)}
# Config keys: release name -> paris field.
EXPERT_KEYS = {"hidden_size": "hidden_size", "num_layers": "depth", "num_heads": "num_heads",
               "patch_size": "patch_size", "in_channels": "in_channels", "mlp_ratio": "mlp_ratio",
               "text_embed_dim": "text_dim"}
ROUTER_KEYS = {"hidden_size": "hidden_size", "num_layers": "depth", "num_heads": "num_heads",
               "patch_size": "patch_size", "in_channels": "in_channels", "mlp_ratio": "mlp_ratio",
               "num_clusters": "num_experts"}
# Keys that say how the release was trained or stored, not what the network computes.
BOOKKEEPING = {"model_type", "cfg_dropout_prob", "architectures", "torch_dtype", "transformers_version"}
DOWNLOAD_AGAIN = "download the release again (`hf download bageldotcom/paris --local-dir DIR`)"
POS_EMBED_TOLERANCE = 1e-4  # a stored table within this of DiT's fixed one is that table (float32 rounding)


@dataclass
class Component:
    """What converting one network found: the paris config, and what the user should know about it."""

    folder: str
    config: DiTConfig | RouterConfig
    pos_embed: str  # "absent", "DiT's fixed table", or "its own table (kept)"
    ignored_keys: list[str] = field(default_factory=list)  # config keys with no meaning for paris, listed


@dataclass
class ReleaseRoot:
    """What paris reads of the release's root config.json, typed (its other keys name models on the hub)."""

    num_experts: Positive
    image_size: Positive
    num_channels: Positive
    use_latents: bool = True


@dataclass
class ReleaseNetwork:
    """What paris reads of a release network's config.json, typed, under the release's names (EXPERT_KEYS and
    ROUTER_KEYS give paris's); None: not given."""

    hidden_size: Positive
    num_layers: Positive
    num_heads: Positive
    patch_size: Positive
    in_channels: Optional[Positive] = None
    out_channels: Optional[Positive] = None
    mlp_ratio: Optional[PositiveFloat] = None
    text_embed_dim: Optional[Positive] = None
    num_clusters: Optional[Positive] = None
    use_adaln_single: bool = True


@dataclass
class ReleaseVae:
    """What paris reads of the release's vae/config.json."""

    scaling_factor: PositiveFloat = 0.18215


def read_typed(folder: RunDir, rel: str, cls: type) -> tuple[dict, object]:
    """JSON file `rel` as given, and the keys of it that dataclass `cls` names, typed and range-checked (one
    error naming the file and the key). A required field of `cls` that is absent says the file is not the
    release's."""
    given = folder.read_json(rel)
    if not isinstance(given, dict):
        raise ParisError(f"{folder.url}/{rel} holds a JSON {type(given).__name__}, not an object; it is not a Paris "
                         "release config")
    names = [f.name for f in dataclasses.fields(cls)]
    lacking = [f.name for f in dataclasses.fields(cls)
               if f.default is dataclasses.MISSING and f.name not in given]
    if lacking:
        raise ParisError(f"{folder.url}/{rel} lacks {', '.join(lacking)}; it is not a Paris release config")
    return given, from_dict(cls, {key: given[key] for key in names if key in given}, f"{folder.url}/{rel}: ")


def is_release(folder: RunDir) -> bool:
    """A folder laid out as the public release (its root config says how many experts; its experts' configs
    are the release's, with no paris class name)."""
    if not folder.exists("config.json") or not folder.exists("expert_0/config.json"):
        return False
    index = folder.read_json("model_index.json") if folder.exists("model_index.json") else {}
    expert = folder.read_json("expert_0/config.json")
    return (isinstance(index, dict) and index.get("_class_name") == "DDMPipeline"
            or not isinstance(expert, dict) or "_class_name" not in expert)


def root_config(folder: RunDir) -> ReleaseRoot:
    """The release's root config.json, checked for what paris needs from it."""
    return read_typed(folder, "config.json", ReleaseRoot)[1]


def components(folder: RunDir, timestep_map: str = "1000t") -> tuple[ReleaseRoot, list[Component]]:
    """The release's root config, and what each network's config and weights hold: the experts, then the router."""
    root = root_config(folder)
    found = [expert_config(folder, k, root, timestep_map) for k in range(root.num_experts)]
    return root, [*found, router_config(folder, root, timestep_map)]


def pipeline_config(folder: RunDir, root: ReleaseRoot) -> dict:
    """What a paris pipeline needs to know of the release besides its networks (paris.inference.pipeline.PIPELINE_KEYS),
    and where its encoders are: `autoencoder_path`, `text_encoder_path`, `tokenizer_path` (local paths)."""
    latents = root.use_latents
    vae = read_typed(folder, "vae/config.json", ReleaseVae)[1] if latents and folder.exists("vae/config.json") else ReleaseVae()
    return {"num_experts": root.num_experts, "latent_shape": [root.num_channels, root.image_size, root.image_size],
            "autoencoder": "sd-vae" if latents else "identity", "latent_scale": vae.scaling_factor,
            "autoencoder_path": local_folder(folder, "vae") if latents else "", "text_encoder": "clip",
            "max_tokens": 77, "text_encoder_path": local_folder(folder, "text_encoder"),
            "tokenizer_path": local_folder(folder, "tokenizer")}


def local_folder(folder: RunDir, name: str) -> str:
    """A local path to the release's folder `name`: where it is on a local disk; from an object store, a copy in
    $PARIS_CACHE (else ~/.cache/paris), made once, because transformers and diffusers load local paths only."""
    if folder.is_local:
        return folder.path(name)
    key = hashlib.sha256(folder.url.encode()).hexdigest()[:16]
    cache = RunDir(machine_cache("releases", key))
    cached = cache.sizes(name)
    for file, size in folder.sizes(name).items():
        if cached.get(file) != size:
            cache.write_bytes(f"{name}/{file}", folder.read_bytes(f"{name}/{file}"))
    return cache.path(name)


def expert_config(folder: RunDir, k: int, root: ReleaseRoot, timestep_map: str = "1000t") -> Component:
    rel = f"expert_{k}/config.json"
    given, network = read_typed(folder, rel, ReleaseNetwork)
    channels = network.in_channels or root.num_channels
    if (network.out_channels or channels) != channels:
        raise ParisError(f"{folder.url}/{rel}: out_channels {network.out_channels} differs from in_channels; "
                         "paris's experts predict a velocity of the latent's own channels (no learned variance)")
    if not network.use_adaln_single:
        raise ParisError(f"{folder.url}/{rel} says use_adaln_single: false; paris's expert is the release's "
                         "AdaLN-Single DiT only")
    fields = {"in_channels": root.num_channels, "mlp_ratio": 4.0, "text_dim": 768, **_translate(network, EXPERT_KEYS),
              "input_size": root.image_size, "timestep_map": timestep_map}
    return Component(f"expert_{k}", *_with_pos_embed(DiTConfig, fields, folder, f"expert_{k}", EXPERT_WEIGHTS),
                     ignored_keys=_ignored(given, EXPERT_KEYS, {"out_channels", "use_adaln_single"}))


def router_config(folder: RunDir, root: ReleaseRoot, timestep_map: str = "1000t") -> Component:
    given, network = read_typed(folder, "router/config.json", ReleaseNetwork)
    fields = {"in_channels": root.num_channels, "mlp_ratio": 4.0, "num_experts": root.num_experts,
              **_translate(network, ROUTER_KEYS), "input_size": root.image_size, "text_dim": 0,
              "timestep_map": timestep_map}
    return Component("router", *_with_pos_embed(RouterConfig, fields, folder, "router", ROUTER_WEIGHTS),
                     ignored_keys=_ignored(given, ROUTER_KEYS, set()))


def load_release_model(folder: RunDir, component: Component, shapes_only: bool = False) -> nn.Module:
    """The paris network of one release component, its weights renamed and checked (built on meta: the
    release's tensors become the model's, no random initialisation). With `shapes_only`, the check alone,
    from the file's header: the model stays on the meta device."""
    is_expert = isinstance(component.config, DiTConfig)
    weights = f"{component.folder}/{EXPERT_WEIGHTS if is_expert else ROUTER_WEIGHTS}"
    with parameters_on_meta():
        model = (DiT if is_expert else Router)(component.config)
    if shapes_only:
        header = _header(folder, weights)[0]
        tensors = {name: torch.empty(info["shape"], device="meta") for name, info in header.items()
                   if name != "__metadata__"}
    else:
        tensors = folder.load_tensors(weights, remedy=DOWNLOAD_AGAIN)
    state = convert_state(tensors, model, f"{folder.url}/{weights}")
    model.load_state_dict(state, assign=True)
    return model.eval()


def convert_state(release: dict[str, torch.Tensor], model: nn.Module, where: str,
                  skip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The release's tensors under paris's names for `model`, as float32; refuses with ONE error naming every
    unmapped, missing and mis-shaped tensor (tensors that differ only by block index are grouped). Paris
    tensors starting with a prefix in `skip` are left out (a fresh head, re-initialised by the caller)."""
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(skip)}
    converted, unmapped, not_float = {}, [], []
    for name, tensor in release.items():
        if name == "pos_embed" and "x_embedder.pos_embed" not in expected:
            continue  # DiT's fixed table, checked when the config was made
        targets = paris_names(name)
        if targets[0].startswith(skip):
            continue
        if not all(target in expected for target in targets):
            unmapped.append(name)
        elif not tensor.is_floating_point():
            not_float.append(f"{name} ({tensor.dtype})")
        else:
            converted.update(_renamed(tensor.float(), targets, expected))
    problems = [f"unmapped {n}" for n in _grouped(unmapped)] + [f"not floating point: {n}" for n in not_float]
    problems += [f"missing {n}" for n in _grouped([k for k in expected if k not in converted])]
    problems += [f"mis-shaped {k}: {tuple(v.shape)} in the release, {tuple(expected[k].shape)} in paris"
                 for k, v in converted.items() if v.shape != expected[k].shape]
    if problems:
        raise ParisError(f"{where} does not fit the paris model its config describes: {'; '.join(problems)}. "
                         "`paris convert-release --inspect SRC` lists the release's tensors")
    return converted


def _renamed(tensor: torch.Tensor, targets: tuple[str, ...], expected: dict) -> dict[str, torch.Tensor]:
    """`tensor` as the paris tensors `targets`: a fused q|k|v projection split into its first third and the rest;
    a position table in paris's layout when it holds as many numbers (else it stays, to be reported mis-shaped)."""
    if len(targets) == 2:
        parts = tensor.tensor_split([tensor.shape[0] // 3]) if tensor.dim() else (tensor, tensor)
        return dict(zip(targets, parts))
    target = targets[0]
    if target.endswith("pos_embed") and tensor.numel() == expected[target].numel():
        tensor = tensor.reshape(expected[target].shape)
    return {target: tensor}


def paris_names(name: str) -> tuple[str, ...]:
    """The paris tensor(s) that release tensor `name` becomes: one, or two for a fused attention projection."""
    if name == "pos_embed":
        return ("x_embedder.pos_embed",)
    for release_prefix, paris_prefix in MODULES:
        if name.startswith(release_prefix):
            name = paris_prefix + name[len(release_prefix):]
            break
    for release_suffix, paris_suffixes in ATTENTION.items():
        if name.endswith("." + release_suffix):
            stem = name[: -len(release_suffix)]
            return tuple(stem + suffix for suffix in paris_suffixes)
    return (name,)


def inspect_release(src: str) -> dict[str, list[tuple[str, str, tuple[int, ...]]]]:
    """{weights file: [(tensor name, dtype, shape)]} of a release, from the safetensors headers alone (a few KB
    per file; no weights are read)."""
    folder = RunDir(src)
    networks = [d for d in folder.list("") if d.startswith("expert_") or d == "router"]
    files = [f"{d}/{w}" for d in networks for w in (EXPERT_WEIGHTS, ROUTER_WEIGHTS) if folder.exists(f"{d}/{w}")]
    if not files:
        raise ParisError(f"{src} holds no expert_<i>/{EXPERT_WEIGHTS} or router/{ROUTER_WEIGHTS}; give the folder "
                         "of a Paris release download")
    listing = {}
    for rel in files:
        header = _header(folder, rel, data=False)[0]
        listing[rel] = [(name, info["dtype"], tuple(info["shape"])) for name, info in sorted(header.items())
                        if name != "__metadata__"]
    return listing


def _header(folder: RunDir, rel: str, data: bool = True) -> tuple[dict, int]:
    """A release weights file's checked header and where its data starts (paris.tensor_file)."""
    return tensor_file.read_header(folder, rel, data, remedy=DOWNLOAD_AGAIN)


def _translate(network: ReleaseNetwork, keys: dict[str, str]) -> dict:
    """The fields of `network` that `keys` maps, under paris's names; those not given are left out."""
    return {paris: getattr(network, release) for release, paris in keys.items() if getattr(network, release) is not None}


def _ignored(given: dict, keys: dict[str, str], checked: set[str]) -> list[str]:
    known = set(keys) | checked | BOOKKEEPING
    return sorted(key for key in given if key not in known and not key.startswith("_"))


def _with_pos_embed(config_cls, fields: dict, folder: RunDir, component: str, weights: str):
    """(config, what was found): a stored pos_embed equal to DiT's fixed table is dropped (paris computes it);
    another table is kept in the weights (pos_embed: stored). Only the table's bytes are read."""
    rel = f"{component}/{weights}"
    header, start = _header(folder, rel)
    config = from_dict(config_cls, fields, f"{folder.url}/{component}/config.json: ")  # typed before any arithmetic
    if "pos_embed" not in header:
        return config, "absent"
    table = tensor_file.read_tensor(folder, rel, "pos_embed", header, start).float()
    fixed = sincos_2d(config.hidden_size, config.input_size // config.patch_size)
    same = table.numel() == fixed.numel() and (table.view(fixed.shape) - fixed).abs().max() < POS_EMBED_TOLERANCE
    config = config if same else dataclasses.replace(config, pos_embed="stored")
    return config, "DiT's fixed table" if same else "its own table (kept)"


def _grouped(names: list[str]) -> list[str]:
    """Each name once, except that names differing only by block index are one entry, with * for the index
    and how many tensors it stands for."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(re.sub(r"\.\d+\.", ".*.", name), []).append(name)
    return [members[0] if len(members) == 1 else f"{pattern} (x{len(members)})" for pattern, members in groups.items()]
