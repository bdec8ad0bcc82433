"""The networks (DiT experts, router, frozen encoders) and what is done to their weights (io, quantize, resident)."""

from paris.models.quantize import quiet_torchao_imports

quiet_torchao_imports()  # before any model loads: diffusers imports torchao as it loads one, whenever it is installed
