"""Tiny, randomly initialised instances of the real encoder classes, saved with `save_pretrained`, and tiny
data sets in every source format: what the data tests (and benchmarks/prepare_speed.py) prepare from, through
the paths users take.

The CLIP tokenizer is a real CLIPTokenizer over a vocabulary we write: the 256 byte symbols of CLIP's
byte-level BPE (plus their end-of-word forms) and no merges, so every character is one token.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from paris.config import DataConfig, RunConfig

IMAGE_SIZE = 64  # prepared images are 64x64: latents 4x8x8 through the tiny 8x-down VAE


def save_tiny_vae(path: Path) -> Path:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=4,
                        block_out_channels=(4, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=IMAGE_SIZE)
    vae.save_pretrained(path)
    return path


def tiny_clip_text(path: Path):
    """The CLIP tokenizer described at the top, saved to `path`, and a tiny text config over its vocabulary."""
    from transformers import CLIPTextConfig, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"])}
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(path)
    return CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=77,
                          bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                          pad_token_id=vocab["<|endoftext|>"])


def save_tiny_clip(path: Path) -> Path:
    """The text encoder alone (CLIPTextModel), as the pipeline uses it."""
    from transformers import CLIPTextModel

    CLIPTextModel(tiny_clip_text(path)).save_pretrained(path)
    return path


def save_tiny_clip_model(path: Path) -> Path:
    """A whole CLIP (text and 32x32 vision towers, 16-d joint space) with its tokenizer and image processor,
    laid out as a download of openai/clip-vit-large-patch14: what the CLIP score loads."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPVisionConfig

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8)
    config = CLIPConfig(text_config=tiny_clip_text(path).to_dict(), vision_config=vision.to_dict(), projection_dim=16)
    with torch.random.fork_rng():  # the same weights in every session: score tests need pairs of both signs
        torch.manual_seed(0)
        CLIPModel(config).save_pretrained(path)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def save_tiny_dinov2(path: Path) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                             patch_size=14, image_size=224)).save_pretrained(path)
    return path


@functools.lru_cache(maxsize=None)
def tiny_models() -> dict[str, str]:
    """Saved once per test session, in a temporary directory."""
    root = Path(tempfile.mkdtemp(prefix="paris-tiny-models-"))
    return {"vae": str(save_tiny_vae(root / "vae")), "clip": str(save_tiny_clip(root / "clip")),
            "dinov2": str(save_tiny_dinov2(root / "dinov2")), "clip_model": str(save_tiny_clip_model(root / "clip_model"))}


def laion_config(models: dict[str, str], source: str, path: str, **data) -> RunConfig:
    """Paris's pipeline (sd-vae, clip 77 tokens, dinov2) at test size."""
    return RunConfig(data=DataConfig(
        source=source, path=path, image_size=IMAGE_SIZE, min_image_size=32, autoencoder="sd-vae",
        autoencoder_path=models["vae"], text_encoder="clip", text_encoder_path=models["clip"], max_tokens=77,
        features="dinov2", features_path=models["dinov2"], shard_size=4, batch_size=4, **data))


def with_data(config: RunConfig, **data) -> RunConfig:
    return dataclasses.replace(config, data=dataclasses.replace(config.data, **data))


def image_bytes(seed: int, size=(80, 64), fmt: str = "JPEG") -> bytes:
    """A random-looking but smooth image (JPEG keeps it near-exact), `size` = (width, height)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(size, Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def caption(i: int) -> str:
    return f"picture number {i} of a thing"


def write_folder(root: Path, n: int, captions: str = "txt") -> Path:
    """n JPEGs; captions in .txt files beside them, or one captions.jsonl / captions.csv."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"{i:04d}.jpg").write_bytes(image_bytes(i))
        if captions == "txt":
            (root / f"{i:04d}.txt").write_text(caption(i))
    rows = [{"file": f"{i:04d}.jpg", "text": caption(i), "label": i % 3} for i in range(n)]
    if captions == "jsonl":
        (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if captions == "csv":
        (root / "captions.csv").write_text("file,text,label\n" + "".join(f"{r['file']},{r['text']},{r['label']}\n" for r in rows))
    return root


def write_tar(path: Path, first: int, n: int, truncate: bool = False, stats: bool = False) -> Path:
    """An img2dataset-style webdataset shard: KEY.jpg, KEY.txt, KEY.json per sample (and NNNNN_stats.json)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i in range(first, first + n):
            key = f"{i:09d}"
            files = {"jpg": image_bytes(i), "txt": caption(i).encode(),
                     "json": json.dumps({"key": key, "label": i % 3}).encode()}
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    if stats:
        path.with_name(path.stem + "_stats.json").write_text(json.dumps({"count": n, "successes": n}))
    if truncate:  # img2dataset killed mid-write
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return path
