"""Per-sample text -> the token states the experts cross-attend to, for either way of storing text.

- text_storage=embeddings: the fp16 states were computed by `prepare`; look them up.
- text_storage=tokens: the ids were stored; run the text encoder now. When the data's distinct captions
  are few (templated captions, the demo), each is encoded once up front in a fixed order, so training is
  as fast and as reproducible as a lookup; otherwise (web captions, all distinct) each batch is encoded.
The empty prompt "" (caption dropout, classifier-free guidance) is encoded by the same encoder, which runs on
the device of the job that trains (the states come back on the CPU, beside the rest of the store).
"""

from __future__ import annotations

import torch

from paris.models.encoders import build_text_encoder
from paris.errors import ParisError

CHUNK = 256  # captions per encoder call when building the table
TABLE_BYTES = 1 << 30  # build the table when the distinct captions' states fit in this


class TextLookup:
    def __init__(self, manifest: dict, text_data: dict[str, torch.Tensor], captions: list[str], device: str = "cpu"):
        self.mask = text_data["text_mask"]
        enc = manifest["encoders"]
        if "text_states" in text_data:
            self.states = text_data["text_states"]
            self.empty_states = torch.tensor(manifest["empty_text"]["states"], dtype=torch.float16)
            self.empty_mask = torch.tensor(manifest["empty_text"]["mask"], dtype=torch.bool)
            return
        self.states = None
        try:
            self.encoder = build_text_encoder(enc["text_encoder"], enc["text_encoder_path"], enc["max_tokens"], device)
        except ParisError as e:
            raise ParisError(f"this store keeps token ids, so training encodes text and needs the text encoder: {e}") from None
        self.ids = text_data["text_ids"]
        self.empty_ids, self.empty_mask = (t[0] for t in self.encoder.tokenize([""]))
        distinct = list(dict.fromkeys(["", *captions]))  # "" is row 0
        bytes_per_caption = 4 * enc["max_tokens"] * manifest["text_dim"]
        self.table = None
        if len(distinct) * bytes_per_caption <= TABLE_BYTES:
            row = {c: i for i, c in enumerate(distinct)}
            self.row = torch.tensor([row[c] for c in captions], dtype=torch.int64)
            chunks = [self.encoder.tokenize(distinct[i : i + CHUNK]) for i in range(0, len(distinct), CHUNK)]
            self.table = torch.cat([self.encoder.encode_tokens(ids, mask) for ids, mask in chunks])
            self.table_mask = torch.cat([mask for _, mask in chunks])

    def __call__(self, index: torch.Tensor, drop: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        drop = torch.zeros(len(index), dtype=torch.bool) if drop is None else drop
        if self.states is not None:
            states = torch.where(drop[:, None, None], self.empty_states, self.states[index]).float()
            return states, torch.where(drop[:, None], self.empty_mask, self.mask[index])
        if self.table is not None:
            rows = torch.where(drop, 0, self.row[index])
            return self.table[rows], self.table_mask[rows]
        ids = torch.where(drop[:, None], self.empty_ids, self.ids[index])
        mask = torch.where(drop[:, None], self.empty_mask, self.mask[index])
        return self.encoder.encode_tokens(ids, mask), mask
