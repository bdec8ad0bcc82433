"""Previews while training: every `preview_every` steps a job draws its validation prompts with its EMA weights.

The images are what `paris generate` would draw with this network alone (the run's sample settings, seed 0,
the same noise at every preview), one row per prompt, in <job>/previews/<step>.png and in TensorBoard. A
preview is written before the checkpoint of its step, so a job resumed after a crash redraws the previews
it had not written and rewrites, identically, the one it had.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Callable

import numpy as np
import torch
from torch import nn

from paris import layout
from paris.config import RunConfig
from paris.data.shard_reader import read_captions
from paris.data.store import Store
from paris.images import grid
from paris.models.encoders import build_autoencoder, build_text_encoder
from paris.run import RunDir
from paris.inference.mixture import ExpertPool, Mixture
from paris.inference.sampler import generate

DEFAULT_PROMPTS = 4  # without preview_prompts: this many of the job's own captions


def previewer(run: RunDir, config: RunConfig, store: Store, folder: str) -> Callable[[nn.Module, int, object], None] | None:
    """preview(ema, step, metrics) for a job training on `store`, or None when the config asks for none. The
    encoders load on the first preview, so a job that never reaches one never loads them."""
    cfg, data, sample = config.expert, config.data, config.sample
    if cfg.preview_every is None:
        return None
    prompts = cfg.preview_prompts or first_captions(store, DEFAULT_PROMPTS)
    encoders = {}

    @torch.no_grad()
    def preview(ema: nn.Module, step: int, metrics=None) -> None:
        device = str(next(ema.parameters()).device)
        if not encoders:
            encoders["text"] = build_text_encoder(data.text_encoder, data.text_encoder_path, data.max_tokens, device)
            encoders["image"] = build_autoencoder(data.autoencoder, data.autoencoder_path, data.latent_scale, device)
        mixture = Mixture(ExpertPool([lambda: ema], device=device), None, encoders["text"], encoders["image"],
                          tuple(store.latent_shape))
        # quantize none: int8 is done in place, and these are the weights being trained
        images, _ = generate(mixture, prompts, dataclasses.replace(sample, strategy="top1", seed=0, compile=False,
                                                                   quantize="none"))
        sheet = grid(images, rows=len(prompts), labels=prompts, scale=max(1, 64 // images.shape[-1]))
        buffer = io.BytesIO()
        sheet.save(buffer, format="PNG")
        run.write_bytes(layout.preview(folder, step), buffer.getvalue())
        if metrics is not None:
            metrics.image("preview", np.asarray(sheet), step)

    return preview


def first_captions(store: Store, n: int) -> list[str]:
    """The first `n` distinct non-empty captions of the store, in its order (read from shard headers)."""
    seen: dict[str, None] = {}
    for ref in store.shards:
        seen.update(dict.fromkeys(c for c in read_captions(store.run, ref) if c))
        if len(seen) >= n:
            break
    return list(seen)[:n] or [""]
