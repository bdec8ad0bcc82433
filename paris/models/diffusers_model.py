"""The expert and the router as diffusers models (ModelMixin, ConfigMixin), for diffusers' own loading.

A saved network folder (config.json + diffusion_pytorch_model.safetensors) loads with paris's loader as a
plain DiT or Router, and with diffusers as these subclasses (`DiffusersDiT.from_pretrained(folder)`, and the
components of paris.inference.diffusers_pipeline): the same network, the same tensor names. They live apart so that
training and paris's own sampling never import diffusers' model machinery (2 s at every process start).
`architecture` is the typed config; `config` is the same fields as diffusers holds them (a FrozenDict with
attribute access: `model.config.hidden_size`).

Both load with paris's strict loader (paris.models.io.load_pretrained) whoever calls their from_pretrained:
diffusers' own would fill a missing or mis-shaped tensor with random weights and unpickle a .bin. The text
encoder and the VAE of a pipeline folder are named in its model_index.json as the Strict* classes below: the
transformers and diffusers classes, loaded as paris's pipeline loads them (paris.models.encoders.load_strictly).
"""

from __future__ import annotations

import dataclasses
import os
import re

import torch
# diffusers finds a component's loading method through the base classes its module holds by name (ModelMixin,
# and PreTrainedModel for the text encoder).
from diffusers import AutoencoderKL, ConfigMixin, ModelMixin
from huggingface_hub import snapshot_download
from transformers import BertModel, CLIPTextModel, PreTrainedModel  # noqa: F401 (PreTrainedModel: as ModelMixin above)

from paris.config import DiTConfig, RouterConfig, from_dict
from paris.errors import ParisError, first_line
from paris.models.dit import DiT
from paris.models.encoders import load_strictly
from paris.models.io import load_pretrained
from paris.models.router import Router
from paris.run import RunDir

# diffusers' loading options that would load other weights than the folder's safetensors, or load them otherwise
REFUSED_OPTIONS = ("variant", "quantization_config", "ignore_mismatched_sizes", "output_loading_info",
                   "use_flashpack", "parallel_config")
HUB_OPTIONS = ("revision", "cache_dir", "token", "local_files_only", "force_download")  # passed to the download
HUB_REPOSITORY = re.compile(r"[\w.-]+/[\w.-]+")  # "owner/name"


class DiffusersModel(ModelMixin, ConfigMixin):
    config_name = "config.json"
    network: type  # the paris network (DiT, Router); its config class below
    config_class: type

    def __init__(self, architecture):
        self.network.__init__(self, architecture)  # builds the layers (torch's Module.__init__ comes through it)
        self._gradient_checkpointing_func = None  # what ModelMixin.__init__ would have set
        self.register_to_config(**dataclasses.asdict(architecture))

    @classmethod
    def from_config(cls, config, return_unused_kwargs: bool = False, **unused):
        """Build from a config.json's fields: how diffusers' from_pretrained builds a model. Every field of
        the architecture must be there (a missing one means another version wrote it); diffusers' own
        bookkeeping keys (_class_name, _diffusers_version, ...) are skipped."""
        fields = {key: value for key, value in dict(config).items() if not key.startswith("_")}
        model = cls(from_dict(cls.config_class, fields, where="config.json: ", complete=True))
        return (model, unused) if return_unused_kwargs else model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, subfolder: str | None = None, **options):
        """The network saved at `pretrained_model_name_or_path` (a folder, a URL paris reads such as s3://..., or
        a Hub repository, downloaded as diffusers would) in `subfolder`, through paris's strict loader. Of
        diffusers' options it takes dtype (or torch_dtype) and a device_map naming one device (a paris network
        is never split); the others that would change what loads are refused, and the rest (memory and
        offloading hints) do not apply."""
        refused = [name for name in REFUSED_OPTIONS if options.get(name)]
        if options.get("use_safetensors") is False:
            refused.append("use_safetensors=False (pickle weights are never loaded)")
        if refused:
            raise ParisError(f"paris networks load from their safetensors as saved; {cls.__name__}.from_pretrained "
                             f"does not take {', '.join(refused)}")
        run, folder = _locate(str(pretrained_model_name_or_path), subfolder, options)
        model = load_pretrained(run, folder, as_class=cls)
        model.register_to_config(_name_or_path=str(pretrained_model_name_or_path))
        dtype = options.get("dtype") or options.get("torch_dtype")
        # torch's own `to`: ModelMixin's warns of fp32 modules at every cast, though paris's networks have none
        return torch.nn.Module.to(model, device=_one_device(options.get("device_map")), dtype=dtype)


class DiffusersDiT(DiffusersModel, DiT):
    network, config_class = DiT, DiTConfig


class DiffusersRouter(DiffusersModel, Router):
    network, config_class = Router, RouterConfig


def _strict(base: type) -> type:
    """`base` (a text encoder or VAE class) whose from_pretrained loads strictly: safetensors only, each file
    checked by paris's reader, every tensor of the model in the file."""

    def from_pretrained(cls, path, subfolder: str | None = None, **options):
        if options.pop("use_safetensors", None) is False:
            raise ParisError(f"{cls.__name__}.from_pretrained does not take use_safetensors=False (pickle weights "
                             "are never loaded)")
        options.pop("output_loading_info", None)
        folder = os.path.join(str(path), subfolder) if subfolder else str(path)
        return load_strictly(super(strict, cls).from_pretrained, folder, RESAVE_PIPELINE, **options)

    strict = type(f"Strict{base.__name__}", (base,), {"from_pretrained": classmethod(from_pretrained),
                                                      "__module__": __name__, "__doc__": f"{base.__name__}, strictly loaded."})
    return strict


RESAVE_PIPELINE = "save the pipeline folder again (ParisPipeline.save_pretrained) or download it again"
StrictCLIPTextModel, StrictBertModel, StrictAutoencoderKL = (_strict(c) for c in (CLIPTextModel, BertModel, AutoencoderKL))


def strict_component(model) -> list[str]:
    """A text encoder's or VAE's entry in model_index.json: its Strict* class here, which diffusers imports."""
    name = f"Strict{type(model).__name__.removeprefix('Strict')}"
    if name not in globals():
        raise ParisError(f"a pipeline folder cannot hold a {type(model).__name__}; its text encoder is CLIP or "
                         "MiniLM (BertModel) and its autoencoder AutoencoderKL")
    return [__name__, name]


def _locate(path: str, subfolder: str | None, options: dict) -> tuple[RunDir, str]:
    """The run directory and the folder in it that hold the network. A Hub repository ("owner/name", not a
    local path) is downloaded to the Hub's cache first, only `subfolder` of it."""
    if HUB_REPOSITORY.fullmatch(path) and not os.path.exists(path):
        try:
            path = snapshot_download(path, allow_patterns=f"{subfolder.strip('/')}/*" if subfolder else None,
                                     **{name: options[name] for name in HUB_OPTIONS if name in options})
        except OSError as e:  # the Hub's errors (not found, offline, no connection) are all OSErrors
            raise ParisError(f"{path} is no folder here, and no Hub repository could be had: {first_line(e)}") from None
    if subfolder:
        return RunDir(path), subfolder.strip("/")
    parent, _, name = path.rstrip("/").rpartition("/")
    return RunDir(parent or "."), name


def _one_device(device_map) -> torch.device | None:
    """The device of diffusers' `device_map` (None: where the weights load, the CPU)."""
    if isinstance(device_map, dict) and set(device_map) == {""}:  # what DiffusionPipeline gives each component
        device_map = device_map[""]
    try:
        return None if device_map is None else torch.device(device_map)
    except (RuntimeError, TypeError):
        raise ParisError(f"device_map={device_map!r} would split a paris network; give one device "
                         "('cuda', 'cpu', {'': 'cuda:1'}): each network loads whole") from None
