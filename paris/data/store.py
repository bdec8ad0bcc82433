"""The samples one training job reads, streamed from shards: memory stays flat however large the data.

A `Store` is a list of shards and, per shard, which of its samples it takes (all of them, one cluster's
rows, the router's training rows). Sample i of the store is a (shard, row) pair found by a binary search;
nothing proportional to the data set is held but an int per chosen sample. `batch(index)` reads the shards
it needs through a bounded cache (paris.data.shard_cache) and returns the samples as stored: latents stay
fp16 until the training step moves them to its device.

The order a job visits the samples in is `ShardWindowBatches` (paris.randomness): shards in a fresh order
every epoch, samples shuffled inside windows of shards, so a step reads a few shards and the next window is
read in the background while this one trains.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from paris import layout
from paris.data.shard_cache import ShardCache
from paris.data.shard_reader import TRAINING_COLUMNS, ShardRef, ShardRows, read_captions, read_rows, shard_refs
from paris.data.shard_format import read_manifest
from paris.data.text_lookup import TextLookup
from paris.errors import ParisError
from paris.randomness import ShardWindowBatches, step_generator
from paris.run import RunDir


@dataclass
class Batch:
    latents: torch.Tensor  # [B, C, H, W] as stored (fp16)
    labels: torch.Tensor  # [B] int64 (-1 when the source has no labels)
    rows: torch.Tensor  # [B] the samples' rows in data/ (what the partition assigns)
    text: dict[str, torch.Tensor]  # text_ids or text_states, and text_mask
    captions: list[str]

    def __len__(self) -> int:
        return len(self.labels)


class Store:
    """The samples of one job: shards read on demand, at most a few windows of them in memory."""

    def __init__(self, run: RunDir, manifest: dict, shards: list[ShardRef],
                 columns: tuple[str, ...] = TRAINING_COLUMNS):
        self.run, self.manifest, self.columns = run, manifest, columns
        self.shards = [s for s in shards if s.size]
        sizes = torch.tensor([s.size for s in self.shards], dtype=torch.int64)
        self.ends = torch.cumsum(sizes, 0)
        self.starts = self.ends - sizes
        self._cache: ShardCache[ShardRows] | None = None
        self._text: TextLookup | None = None
        self._checked: set[int] = set()  # shards whose rows this job checked when it first read them

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.shards) else 0

    @property
    def text_dim(self) -> int:
        return self.manifest["text_dim"]

    @property
    def latent_shape(self) -> list[int]:
        return self.manifest["latent_shape"]

    def batches(self, batch_size: int, seed: int, shuffle_buffer: int) -> ShardWindowBatches:
        """The job's order: windows of about `shuffle_buffer` samples (whole shards) shuffled together.
        The cache holds three windows: at a boundary a batch takes from two while the one after is read ahead."""
        window = max(1, round(shuffle_buffer * len(self.shards) / max(len(self), 1)))
        self._cache = ShardCache(self._read, capacity=3 * window)
        return ShardWindowBatches([s.size for s in self.shards], batch_size, seed, window)

    def prefetch(self, shards: list[int]) -> None:
        self._shard_cache().prefetch(shards)

    def batch(self, index: torch.Tensor) -> Batch:
        """Samples `index` of this store, in that order."""
        shard = torch.searchsorted(self.ends, index, right=True)
        needed = shard.unique().tolist()
        cache = self._shard_cache()
        cache.prefetch(needed)  # every shard this batch needs starts loading at once
        places, parts = [], []
        for s in needed:
            mine = (shard == s).nonzero()[:, 0]
            places.append(mine)
            parts.append(_take(cache.get(s), index[mine] - self.starts[s]))
        back = torch.argsort(torch.cat(places))  # from shard order back to the order asked for
        captions = [c for part in parts for c in part.captions]
        return Batch(torch.cat([p.latents for p in parts])[back], torch.cat([p.labels for p in parts])[back],
                     torch.cat([p.rows for p in parts])[back],
                     {k: torch.cat([p.text[k] for p in parts])[back] for k in parts[0].text},
                     [captions[i] for i in back.tolist()])

    def text(self, batch: Batch, drop: torch.Tensor | None = None,
             device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Token states [B,L,D] float32 and mask [B,L] of a batch; where `drop`, the empty prompt.
        A text encoder, when one is needed, is loaded on first use onto `device`."""
        if self._text is None:
            self._text = TextLookup(self.manifest, self.distinct_captions, str(device))
        return self._text(batch, drop)

    def distinct_captions(self, limit: int) -> list[str] | None:
        """The distinct captions, "" first, when there are at most `limit`; None as soon as there are more
        (web captions are all distinct: one shard's header tells)."""
        seen = dict.fromkeys([""])
        for ref in self.shards:
            seen.update(dict.fromkeys(read_captions(self.run, ref)))
            if len(seen) > limit:
                return None
        return list(seen)

    def subset(self, index: torch.Tensor) -> Store:
        """The store of samples `index` (sorted) of this one."""
        first, end = torch.searchsorted(index, self.starts), torch.searchsorted(index, self.ends)
        refs = []
        for s, ref in enumerate(self.shards):
            local = index[first[s] : end[s]] - self.starts[s]
            refs.append(replace(ref, chosen=local if ref.chosen is None else ref.chosen[local]))
        return Store(self.run, self.manifest, refs, self.columns)

    def split(self, fraction: float, seed: int, most: int) -> tuple[Store, Store]:
        """(the rest, a held-out share of `fraction` of the samples, at most `most`), drawn at random."""
        n = len(self)
        held = min(max(1, int(n * fraction)), most) if n > 1 else 0
        chosen = torch.zeros(n, dtype=torch.bool)
        chosen[torch.randperm(n, generator=step_generator(seed, -1, -1))[:held]] = True
        return self.subset((~chosen).nonzero()[:, 0]), self.subset(chosen.nonzero()[:, 0])

    def _shard_cache(self) -> ShardCache[ShardRows]:
        if self._cache is None:  # used without an order (evaluation, tests): a window's worth of shards
            self._cache = ShardCache(self._read, capacity=8)
        return self._cache

    def _read(self, shard: int) -> ShardRows:
        rows = read_rows(self.run, self.shards[shard], self.columns, checked=shard in self._checked)
        self._checked.add(shard)  # read again (a later epoch, once the cache let it go): the same rows, checked
        return rows


def _take(rows: ShardRows, local: torch.Tensor) -> Batch:
    text = {k: v[local] for k, v in rows.tensors.items() if k.startswith("text_")}
    return Batch(rows.tensors["latents"][local], rows.tensors["labels"][local], rows.rows[local], text,
                 [rows.captions[i] for i in local.tolist()])


def load_store(run: RunDir, prefix: str = layout.DATA, keep: torch.Tensor | None = None, text: bool = True) -> Store:
    """The samples of the shard set under `prefix`; with `keep` ([N] bool over the rows of data/), only those;
    without `text`, their text is never read (a router that sees none).
    Reads the manifest and lists the shard folder (a missing or cut-short shard is found before training
    starts); the shards themselves are read as batches need them. One cluster: paris.clusters.export.load_cluster."""
    manifest = read_manifest(run, prefix)
    _check_shards_present(run, prefix, manifest)
    return Store(run, manifest, shard_refs(manifest, prefix, keep), TRAINING_COLUMNS if text else ("latents", "labels"))


def _check_shards_present(run: RunDir, prefix: str, manifest: dict) -> None:
    """One listing per shard folder against the manifest: every shard there, at its recorded size."""
    listings: dict[str, dict[str, int]] = {}
    for entry in manifest["shards"]:
        folder = layout.shards(entry.get("prefix", prefix))
        if folder not in listings:
            listings[folder] = run.sizes(folder)
        size = listings[folder].get(entry["name"])
        if size is None:
            raise ParisError(f"missing {run.url}/{folder}/{entry['name']}; rerun `paris prepare {run.url}` to encode it")
        if size != entry["bytes"]:
            raise ParisError(f"shard {run.url}/{folder}/{entry['name']} is truncated or corrupt ({size} bytes, the "
                             f"manifest says {entry['bytes']}); delete it and rerun `paris prepare` to encode it again")
