"""One image as a source gives it -> a float tensor [3, size, size] in [-1, 1], or a reason to skip it.

RGB (transparency composited on white), shorter side resized to `size` (bicubic, antialiased), centre
crop. Images smaller than `min_size` are skipped rather than upscaled: blurry upscales teach blur.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image


class Skip(Exception):
    """This sample cannot be used; the message is the reason counted in the manifest."""


def load_image(image, size: int, min_size: int) -> torch.Tensor:
    if isinstance(image, torch.Tensor):  # fashion-mnist: already a [C,H,W] tensor in [-1, 1]
        return image
    if image is None:
        raise Skip("no_image")
    pil = _decode(image) if isinstance(image, (bytes, bytearray)) else image
    if min(pil.size) < min_size:
        raise Skip("too_small")
    pil = _rgb(pil)
    scale = size / min(pil.size)
    w, h = max(size, round(pil.width * scale)), max(size, round(pil.height * scale))
    pil = pil.resize((w, h), Image.BICUBIC, reducing_gap=None)
    left, top = (w - size) // 2, (h - size) // 2
    pil = pil.crop((left, top, left + size, top + size))
    array = np.asarray(pil, dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).div(127.5).sub(1)


def _decode(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            pil = Image.open(io.BytesIO(data))
            pil.load()  # decodes now: a truncated file fails here, not later
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise Skip("corrupt") from None
    return pil


def _rgb(pil: Image.Image) -> Image.Image:
    if pil.mode in ("RGBA", "LA", "PA") or (pil.mode == "P" and "transparency" in pil.info):
        rgba = pil.convert("RGBA")
        background = Image.new("RGBA", rgba.size, "white")
        return Image.alpha_composite(background, rgba).convert("RGB")
    return pil.convert("RGB")
