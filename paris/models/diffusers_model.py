"""What makes a paris network a diffusers model: the expert and the router are `ModelMixin`/`ConfigMixin`.

So the same folder (config.json + safetensors) loads with paris (`paris.models.io.load_pretrained`) and with
diffusers (`DiT.from_pretrained(folder)`), and a diffusers pipeline can hold the experts as components.
A network is built from its typed config, a dataclass validated where it is read (`paris.config`);
`architecture` keeps that dataclass, and `config` is the same fields as diffusers holds them (a FrozenDict
with attribute access: `model.config.hidden_size`).
"""

from __future__ import annotations

import dataclasses

from diffusers import ConfigMixin, ModelMixin

from paris.config import from_dict


class DiffusersModel(ModelMixin, ConfigMixin):
    config_name = "config.json"
    config_class: type  # the dataclass of the architecture (DiTConfig, RouterConfig)

    def __init__(self, architecture):
        super().__init__()
        self.architecture = architecture
        self.register_to_config(**dataclasses.asdict(architecture))

    @classmethod
    def from_config(cls, config, return_unused_kwargs: bool = False, **unused):
        """Build from a config.json's fields: how diffusers' from_pretrained builds a model. Every field of
        the architecture must be there (a missing one means another version wrote it); diffusers' own
        bookkeeping keys (_class_name, _diffusers_version, ...) are skipped."""
        fields = {key: value for key, value in dict(config).items() if not key.startswith("_")}
        model = cls(from_dict(cls.config_class, fields, where="config.json: ", complete=True))
        return (model, unused) if return_unused_kwargs else model
