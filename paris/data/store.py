"""The prepared data of a run (data/ in the run directory), loaded into memory.

Layout written by `paris prepare`:
  data/shards/00000.safetensors  latents (fp16), labels, caption_ids, features, for `shard_size` samples each
  data/text.safetensors          token states (fp16) + mask of every distinct caption; row 0 is "" (no text)
  data/manifest.json             written last: counts, shard list with hashes, encoders, shapes
Captions are stored once each and referenced by id: Fashion-MNIST has 40 distinct captions for 60k images,
and caption dropout for classifier-free guidance is just "use id 0".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from paris.run import RunDir

EMPTY_CAPTION_ID = 0


@dataclass
class Store:
    manifest: dict
    latents: torch.Tensor  # [N, C, H, W] float32
    labels: torch.Tensor  # [N] int64 (-1 when the source has no labels)
    caption_ids: torch.Tensor  # [N] int64 into the text table
    features: torch.Tensor  # [N, F] float32, what the partition clusters
    text_states: torch.Tensor  # [U, L, D] float32
    text_mask: torch.Tensor  # [U, L] bool
    captions: list[str]  # [U]

    def __len__(self) -> int:
        return len(self.latents)

    def text(self, caption_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text_states[caption_ids], self.text_mask[caption_ids]

    @property
    def text_dim(self) -> int:
        return self.text_states.shape[-1]


def load_store(run: RunDir) -> Store:
    manifest = run.read_json("data/manifest.json")
    shards = [run.load_tensors(f"data/shards/{s['name']}") for s in manifest["shards"]]
    columns = {key: torch.cat([s[key] for s in shards]) for key in ("latents", "labels", "caption_ids", "features")}
    text = run.load_tensors("data/text.safetensors")
    return Store(
        manifest=manifest,
        latents=columns["latents"].float(),
        labels=columns["labels"],
        caption_ids=columns["caption_ids"],
        features=columns["features"],
        text_states=text["states"].float(),
        text_mask=text["mask"],
        captions=manifest["captions"],
    )
