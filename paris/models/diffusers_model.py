"""The expert and the router as diffusers models (ModelMixin, ConfigMixin), for diffusers' own loading.

A saved network folder (config.json + diffusion_pytorch_model.safetensors) loads with paris's loader as a
plain DiT or Router, and with diffusers as these subclasses (`DiffusersDiT.from_pretrained(folder)`, and the
components of paris.inference.diffusers_pipeline): the same network, the same tensor names. They live apart so that
training and paris's own sampling never import diffusers' model machinery (2 s at every process start).
`architecture` is the typed config; `config` is the same fields as diffusers holds them (a FrozenDict with
attribute access: `model.config.hidden_size`).
"""

from __future__ import annotations

import dataclasses

# diffusers finds a component's loading method through the base classes its module holds by name.
from diffusers import ConfigMixin, ModelMixin

from paris.config import DiTConfig, RouterConfig, from_dict
from paris.models.dit import DiT
from paris.models.router import Router


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


class DiffusersDiT(DiffusersModel, DiT):
    network, config_class = DiT, DiTConfig


class DiffusersRouter(DiffusersModel, Router):
    network, config_class = Router, RouterConfig
