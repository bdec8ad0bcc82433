"""`paris prepare`: read a data set, encode it (latents, text, clustering features) into the run's store."""

from __future__ import annotations

import hashlib

import torch
from rich.console import Console

from paris.config import RunConfig
from paris.data import fashion_mnist
from paris.data.encoders import build_autoencoder, build_text_encoder, image_features
from paris.data.store import EMPTY_CAPTION_ID
from paris.errors import ParisError
from paris.run import RunDir

console = Console(stderr=True)


def prepare(run: RunDir, config: RunConfig) -> dict:
    """Encode the configured data set into RUN/data and write RUN/config.yaml; returns the manifest."""
    cfg = config.data
    if cfg.source != "fashion-mnist":
        raise ParisError(f"unknown data source {cfg.source!r}; this version reads fashion-mnist")
    if cfg.shard_size < 1:
        raise ParisError(f"data.shard_size must be at least 1, got {cfg.shard_size}")
    images, labels = fashion_mnist.load(cfg.path, cfg.split, cfg.limit)
    captions = [fashion_mnist.caption(int(label), i) for i, label in enumerate(labels)]
    console.print(f"[bold]prepare[/]: {len(images)} images from {cfg.source} ({cfg.split}) -> {run.url}/data")

    latents = build_autoencoder(cfg.autoencoder).encode(images)
    table = [""] + sorted(set(captions) - {""})  # row 0 is the empty prompt (EMPTY_CAPTION_ID)
    row = {text: i for i, text in enumerate(table)}
    caption_ids = torch.tensor([row[c] for c in captions], dtype=torch.int64)
    text_states, text_mask = build_text_encoder(cfg.text_encoder, cfg.text_encoder_path, cfg.max_tokens).encode(table)
    features = image_features(cfg.features, images, cfg.feature_dim, cfg.seed)
    assert table[EMPTY_CAPTION_ID] == ""

    run.write_config(config)
    run.save_tensors("data/text.safetensors", {"states": text_states.half(), "mask": text_mask})
    shards = []
    for start in range(0, len(images), cfg.shard_size):
        part = slice(start, start + cfg.shard_size)
        tensors = {
            "latents": latents[part].half(),
            "labels": labels[part],
            "caption_ids": caption_ids[part],
            "features": features[part],
        }
        name = f"{len(shards):05d}.safetensors"
        run.save_tensors(f"data/shards/{name}", tensors)
        shards.append({"name": name, "count": len(tensors["labels"]), "sha256": _digest(tensors)})
    manifest = {
        "source": cfg.source,
        "split": cfg.split,
        "count": len(images),
        "latent_shape": list(latents.shape[1:]),
        "text_dim": int(text_states.shape[-1]),
        "max_tokens": cfg.max_tokens,
        "feature_dim": int(features.shape[1]),
        "encoders": {"autoencoder": cfg.autoencoder, "text": cfg.text_encoder, "features": cfg.features},
        "class_names": fashion_mnist.CLASSES,
        "captions": table,
        "shards": shards,
        "data_hash": hashlib.sha256("".join(s["sha256"] for s in shards).encode()).hexdigest()[:16],
    }
    run.write_json("data/manifest.json", manifest)  # last: the store exists once this does
    console.print(f"wrote {len(shards)} shards, {len(table) - 1} distinct captions, latents {tuple(latents.shape[1:])}")
    return manifest


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        h.update(key.encode())
        h.update(tensors[key].contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
