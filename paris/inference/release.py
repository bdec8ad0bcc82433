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
from dataclasses import dataclass, field

import torch
from torch import nn

from paris.cache import machine_cache
from paris.config import DiTConfig, RouterConfig, from_dict
from paris.data.shard_format import shard_header
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
POS_EMBED_TOLERANCE = 1e-4  # a stored table within this of DiT's fixed one is that table (float32 rounding)


@dataclass
class Component:
    """What converting one network found: the paris config, and what the user should know about it."""

    folder: str
    config: DiTConfig | RouterConfig
    pos_embed: str  # "absent", "DiT's fixed table", or "its own table (kept)"
    ignored_keys: list[str] = field(default_factory=list)  # config keys with no meaning for paris, listed


def is_release(folder: RunDir) -> bool:
    """A folder laid out as the public release (its root config says how many experts; its experts' configs
    are the release's, with no paris class name)."""
    if not folder.exists("config.json") or not folder.exists("expert_0/config.json"):
        return False
    index = folder.read_json("model_index.json") if folder.exists("model_index.json") else {}
    return index.get("_class_name") == "DDMPipeline" or "_class_name" not in folder.read_json("expert_0/config.json")


def root_config(folder: RunDir) -> dict:
    """The release's root config.json, checked for what paris needs from it."""
    root = folder.read_json("config.json")
    lacking = [key for key in ("num_experts", "image_size", "num_channels") if key not in root]
    if lacking:
        raise ParisError(f"{folder.url}/config.json lacks {', '.join(lacking)}; it is not a Paris release config")
    return root


def components(folder: RunDir, timestep_map: str = "1000t") -> tuple[dict, list[Component]]:
    """The release's root config, and what each network's config and weights hold: the experts, then the router."""
    root = root_config(folder)
    found = [expert_config(folder, k, root, timestep_map) for k in range(root["num_experts"])]
    return root, [*found, router_config(folder, root, timestep_map)]


def pipeline_config(folder: RunDir, root: dict) -> dict:
    """What a paris pipeline needs to know of the release besides its networks (paris.inference.pipeline.PIPELINE_KEYS),
    and where its encoders are: `autoencoder_path`, `text_encoder_path`, `tokenizer_path` (local paths)."""
    latents = root.get("use_latents", True)
    vae = folder.read_json("vae/config.json") if latents and folder.exists("vae/config.json") else {}
    return {"num_experts": root["num_experts"], "latent_shape": [root["num_channels"], root["image_size"], root["image_size"]],
            "autoencoder": "sd-vae" if latents else "identity", "latent_scale": vae.get("scaling_factor", 0.18215),
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


def expert_config(folder: RunDir, k: int, root: dict, timestep_map: str = "1000t") -> Component:
    rel = f"expert_{k}/config.json"
    given = folder.read_json(rel)
    if given.get("out_channels", given.get("in_channels")) != given.get("in_channels", root["num_channels"]):
        raise ParisError(f"{folder.url}/{rel}: out_channels {given['out_channels']} differs from in_channels; "
                         "paris's experts predict a velocity of the latent's own channels (no learned variance)")
    if given.get("use_adaln_single") is False:
        raise ParisError(f"{folder.url}/{rel} says use_adaln_single: false; paris's expert is the release's "
                         "AdaLN-Single DiT only")
    fields = _translate(given, EXPERT_KEYS, f"{folder.url}/{rel}")
    fields = {"in_channels": root["num_channels"], "mlp_ratio": 4.0, "text_dim": 768, **fields,
              "input_size": root["image_size"], "timestep_map": timestep_map}
    return Component(f"expert_{k}", *_with_pos_embed(DiTConfig, fields, folder, f"expert_{k}", EXPERT_WEIGHTS),
                     ignored_keys=_ignored(given, EXPERT_KEYS, {"out_channels", "use_adaln_single"}))


def router_config(folder: RunDir, root: dict, timestep_map: str = "1000t") -> Component:
    given = folder.read_json("router/config.json")
    fields = _translate(given, ROUTER_KEYS, f"{folder.url}/router/config.json")
    fields = {"in_channels": root["num_channels"], "mlp_ratio": 4.0, "num_experts": root["num_experts"], **fields,
              "input_size": root["image_size"], "text_dim": 0, "timestep_map": timestep_map}
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
        tensors = folder.load_tensors(weights)
    state = convert_state(tensors, model, f"{folder.url}/{weights}")
    model.load_state_dict(state, assign=True)
    return model.eval()


def convert_state(release: dict[str, torch.Tensor], model: nn.Module, where: str,
                  skip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The release's tensors under paris's names for `model`, as float32; refuses with ONE error naming every
    unmapped, missing and mis-shaped tensor (tensors that differ only by block index are grouped). Paris
    tensors starting with a prefix in `skip` are left out (a fresh head, re-initialised by the caller)."""
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(skip)}
    converted, unmapped = {}, []
    for name, tensor in release.items():
        if name == "pos_embed" and "x_embedder.pos_embed" not in expected:
            continue  # DiT's fixed table, checked when the config was made
        targets = paris_names(name)
        if targets[0].startswith(skip):
            continue
        if not all(target in expected for target in targets):
            unmapped.append(name)
            continue
        for target, part in zip(targets, tensor.float().tensor_split([tensor.shape[0] // 3], dim=0)
                                if len(targets) == 2 else [tensor.float()]):
            converted[target] = part.reshape(expected[target].shape) if target.endswith("pos_embed") else part
    problems = [f"unmapped {n}" for n in _grouped(unmapped)]
    problems += [f"missing {n}" for n in _grouped([k for k in expected if k not in converted])]
    problems += [f"mis-shaped {k}: {tuple(v.shape)} in the release, {tuple(expected[k].shape)} in paris"
                 for k, v in converted.items() if v.shape != expected[k].shape]
    if problems:
        raise ParisError(f"{where} does not fit the paris model its config describes: {'; '.join(problems)}. "
                         "`paris convert-release --inspect SRC` lists the release's tensors")
    return converted


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
        header = _header(folder, rel)[0]
        listing[rel] = [(name, info["dtype"], tuple(info["shape"])) for name, info in sorted(header.items())
                        if name != "__metadata__"]
    return listing


def _header(folder: RunDir, rel: str) -> tuple[dict, int]:
    """A safetensors file's header and where its data starts, read again if the store fails transiently."""
    return folder.read_retrying(rel, lambda: shard_header(folder, rel))


def _translate(given: dict, keys: dict[str, str], where: str) -> dict:
    required = [key for key in ("hidden_size", "num_layers", "num_heads", "patch_size") if key not in given]
    if required:
        raise ParisError(f"{where} lacks {', '.join(required)}; it is not a Paris release network config")
    return {paris: given[release] for release, paris in keys.items() if release in given}


def _ignored(given: dict, keys: dict[str, str], checked: set[str]) -> list[str]:
    known = set(keys) | checked | BOOKKEEPING
    return sorted(key for key in given if key not in known and not key.startswith("_"))


def _with_pos_embed(config_cls, fields: dict, folder: RunDir, component: str, weights: str):
    """(config, what was found): a stored pos_embed equal to DiT's fixed table is dropped (paris computes it);
    another table is kept in the weights (pos_embed: stored). Only the table's bytes are read."""
    rel = f"{component}/{weights}"
    header, start = _header(folder, rel)
    where = f"{folder.url}/{component}/config.json: "
    if "pos_embed" not in header:
        return from_dict(config_cls, fields, where), "absent"
    info = header["pos_embed"]
    first, end = (start + offset for offset in info["data_offsets"])
    data = folder.read_retrying(rel, lambda: folder.fs.cat_file(folder.path(rel), start=first, end=end))
    table = torch.frombuffer(bytearray(data), dtype=SAFETENSORS_DTYPES[info["dtype"]]).float()
    fixed = sincos_2d(fields["hidden_size"], fields["input_size"] // fields["patch_size"])
    same = table.numel() == fixed.numel() and (table.view(fixed.shape) - fixed).abs().max() < POS_EMBED_TOLERANCE
    config = from_dict(config_cls, {**fields, "pos_embed": "sincos" if same else "stored"}, where)
    return config, "DiT's fixed table" if same else "its own table (kept)"


SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def _grouped(names: list[str]) -> list[str]:
    """Each name once, except that names differing only by block index are one entry, with * for the index
    and how many tensors it stands for."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(re.sub(r"\.\d+\.", ".*.", name), []).append(name)
    return [members[0] if len(members) == 1 else f"{pattern} (x{len(members)})" for pattern, members in groups.items()]
