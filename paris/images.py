"""Tensors in [-1, 1] to PNG files: single images and labelled grids."""

from __future__ import annotations

import io
import os

import torch
from PIL import Image, ImageDraw

from paris.run import RunDir


def to_pil(image: torch.Tensor) -> Image.Image:
    """[C, H, W] in [-1, 1] -> a grayscale (C=1) or RGB (C=3) PIL image."""
    array = ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)


def grid(images: torch.Tensor, rows: int, labels: list[str] | None = None, scale: int = 2) -> Image.Image:
    """A grid of `rows` rows; each row may carry a text label at its left."""
    cols = -(-len(images) // rows)
    h, w = images.shape[2] * scale, images.shape[3] * scale
    margin = 150 if labels else 0
    sheet = Image.new("RGB", (margin + cols * w, rows * h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        sheet.paste(to_pil(image).convert("RGB").resize((w, h), Image.NEAREST), (margin + c * w, r * h))
    for r, label in enumerate(labels or []):
        draw.text((4, r * h + h // 2 - 6), label[:24], fill="black")
    return sheet


FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}  # the file names an image may have


def save_image(run: RunDir, rel: str, image: Image.Image) -> None:
    """`image` as file `rel` of `run`, in the format its extension names, written whole (RunDir.write_bytes)."""
    buffer = io.BytesIO()
    image.save(buffer, format=FORMATS[os.path.splitext(rel)[1].lower()])
    run.write_bytes(rel, buffer.getvalue())
