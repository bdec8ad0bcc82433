"""Per-sample text -> the token states the experts cross-attend to, for either way of storing text.

- text_storage=embeddings: the fp16 states were computed by `prepare`; look them up.
- text_storage=tokens: the ids were stored; run the text encoder now. When the data's distinct captions
  are few (templated captions, the demo), each is encoded once up front in a fixed order, so training is
  as fast and as reproducible as a lookup; otherwise (web captions, all distinct) each batch is encoded.
The empty prompt "" (caption dropout, classifier-free guidance) is encoded by the same encoder, which runs on
the device of the job that trains (the states come back on the CPU, beside the rest of the batch).
Nothing here grows with the data: the table is bounded, and the per-sample text comes with each batch.
"""

from __future__ import annotations

from typing import Callable

import torch

from paris.errors import ParisError
from paris.models.encoders import build_text_encoder

CHUNK = 256  # captions per encoder call when building the table
TABLE_BYTES = 1 << 30  # build the table when the distinct captions' states fit in this


class TextLookup:
    def __init__(self, manifest: dict, distinct_captions: Callable[[int], list[str] | None], device: str = "cpu"):
        """`distinct_captions(limit)`: the data's distinct captions, "" first, or None when there are more."""
        self.embedded = manifest["text_storage"] == "embeddings"
        if self.embedded:
            self.empty_states = torch.tensor(manifest["empty_text"]["states"], dtype=torch.float16)
            self.empty_mask = torch.tensor(manifest["empty_text"]["mask"], dtype=torch.bool)
            return
        enc = manifest["encoders"]
        try:
            self.encoder = build_text_encoder(enc["text_encoder"], enc["text_encoder_path"], enc["max_tokens"], device)
        except ParisError as e:
            raise ParisError(f"this store keeps token ids, so training encodes text and needs the text encoder: {e}") from None
        self.empty_ids, self.empty_mask = (t[0] for t in self.encoder.tokenize([""]))
        distinct = distinct_captions(TABLE_BYTES // (4 * enc["max_tokens"] * manifest["text_dim"]))
        self.table = None
        if distinct is not None:
            self.row = {c: i for i, c in enumerate(distinct)}  # "" is row 0
            chunks = [self.encoder.tokenize(distinct[i : i + CHUNK]) for i in range(0, len(distinct), CHUNK)]
            self.table = torch.cat([self.encoder.encode_tokens(ids, mask) for ids, mask in chunks])
            self.table_mask = torch.cat([mask for _, mask in chunks])

    def __call__(self, batch, drop: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """States [B,L,D] float32 and mask [B,L] of a paris.data.store.Batch; where `drop`, the empty prompt."""
        drop = torch.zeros(len(batch), dtype=torch.bool) if drop is None else drop
        mask = torch.where(drop[:, None], self.empty_mask, batch.text["text_mask"])
        if self.embedded:
            return torch.where(drop[:, None, None], self.empty_states, batch.text["text_states"]).float(), mask
        if self.table is not None:
            rows = torch.tensor([0 if d else self.row[c] for c, d in zip(batch.captions, drop.tolist())])
            return self.table[rows], self.table_mask[rows]
        ids = torch.where(drop[:, None], self.empty_ids, batch.text["text_ids"])
        return self.encoder.encode_tokens(ids, mask), mask
