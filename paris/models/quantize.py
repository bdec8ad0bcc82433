"""Int8 weights for a network's linear layers, with torchao (`sample.quantize`):

    none          the weights as trained
    int8          weight-only: each Linear's weight in int8, one fp32 scale per output row, dequantised in the
                  matmul: a quarter of the memory, about the speed of fp32
    int8-dynamic  the same weights, and each call's activations quantised per token for int8 matmuls: the same
                  memory, about 2x faster than fp32 on a DiT-B/2 on a CPU with VNNI, slower on tiny networks

Only nn.Linear layers change (a DiT's weights are nearly all in them); patch embedding, norms and the learned
tables stay as trained. Quantising is done in place and cannot be undone: the trained weights are read again to
go back. Runs on CPU and CUDA (benchmarks/int8.py measures the speed and memory of each).
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from paris.errors import ParisError

DEVICES = ("cpu", "cuda")  # where torchao's int8 kernels run
# What is logged as torchao is imported (by paris, or by diffusers as it loads a model, whenever torchao is
# installed): its CUDA-only kernels failing to load on another build, torch's notice of a deprecated registration,
# and diffusers' of torchao tensor classes for checkpoints that paris never reads. None concerns int8 here.
IMPORT_NOISE = {"torchao": "Failed to load",
                "torch.utils._pytree": "is an Enum subclass and is now natively supported",
                "diffusers.quantizers.torchao.torchao_quantizer": "Unable to import `torchao` Tensor objects"}


def check_quantization(quantize: str, device: torch.device | str) -> None:
    """Refuse, in one line, a quantization (a name SampleConfig checked) that cannot run here:
    torchao missing, or a device without its kernels."""
    if quantize == "none":
        return
    if torch.device(device).type not in DEVICES:
        raise ParisError(f"quantize {quantize} runs on cpu or cuda, not {device}; use --quantize none there",
                         "quantize")
    _torchao_quantization()


def quantized(model: nn.Module, quantize: str) -> nn.Module:
    """`model` with its linear layers quantised in place (on the device its weights are on); a model already
    quantised as asked is returned as it is."""
    current = quantization_of(model)
    if current == quantize:
        return model
    if current != "none":
        raise ParisError(f"these weights are already {current}, which cannot be undone; load the model again to "
                         f"sample with quantize {quantize}", "quantize")
    check_quantization(quantize, next(model.parameters()).device)
    torchao = _torchao_quantization()
    torchao.quantize_(model, _config(torchao, quantize, next(model.parameters()).device),
                      filter_fn=lambda module, name: isinstance(module, nn.Linear))
    return model


def _config(torchao, quantize: str, device: torch.device):
    """torchao's config of `quantize`; none of them changes the process's inductor settings (set_inductor_config)."""
    if quantize == "int8":
        return torchao.Int8WeightOnlyConfig(set_inductor_config=False)
    from torchao.utils import should_reduce_range

    # a CPU without VNNI overflows the int16 sums of full-range int8 products: torchao then uses 7 bits
    return torchao.Int8DynamicActivationInt8WeightConfig(set_inductor_config=False,
                                                         reduce_range=should_reduce_range(device))


def quantization_of(model: nn.Module) -> str:
    """How `model`'s linear layers are held: none, int8 or int8-dynamic (read from their first weight)."""
    linear = next((module for module in model.modules() if isinstance(module, nn.Linear)), None)
    if linear is None or not is_traceable_wrapper_subclass(linear.weight):
        return "none"
    return "int8-dynamic" if getattr(linear.weight, "act_quant_kwargs", None) is not None else "int8"


def _torchao_quantization():
    """torchao.quantization; a one-line error where it is missing."""
    try:
        import torchao.quantization
    except ImportError as e:
        raise ParisError(f"quantize needs torchao ({e}); install it with `pip install 'paris[int8]'` (or pip "
                         "install torchao), or sample with --quantize none", "quantize") from None
    return torchao.quantization


class _WithoutNoise(logging.Filter):
    """Drops one logger's records that hold `words`."""

    def __init__(self, words: str):
        super().__init__()
        self.words = words

    def filter(self, record: logging.LogRecord) -> bool:
        return self.words not in record.getMessage()


def quiet_torchao_imports() -> None:
    """Keep IMPORT_NOISE off the console: a filter on each logger that writes it (a filter acts where a record is
    made, so on these loggers themselves). Imports nothing; done once, as paris.models is imported."""
    for name, words in IMPORT_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _WithoutNoise) for f in logger.filters):
            logger.addFilter(_WithoutNoise(words))
