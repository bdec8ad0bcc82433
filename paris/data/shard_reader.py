"""Read the rows a training job takes from one shard, and only their bytes.

A safetensors file keeps each tensor contiguous, row after row, at byte offsets listed in its JSON header,
so the rows of a cluster are byte ranges. On a local disk: exactly those rows, by positioned reads of one
open file. On an object store, where a request costs more than a megabyte of transfer: concurrent range
requests (fsspec's cat_ranges), each reading through gaps of up to REMOTE_GAP bytes between chosen rows
(after export-clusters a cluster's rows are contiguous, and nothing extra is read). Columns a job does not
use are never fetched (training never reads the clustering features; the partition never reads the
latents). A dropped connection is retried; a file that is not what the manifest says is a ParisError.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import torch

from paris import layout
from paris.data import row_checksums
from paris.data.shard_format import read_manifest, read_shard, shard_header
from paris.tensor_file import DTYPES
from paris.errors import ParisError
from paris.run import RunDir

TRAINING_COLUMNS = ("latents", "labels", "text_ids", "text_states", "text_mask")
REMOTE_GAP = 1 << 20  # bytes of unchosen rows an object-store request reads through rather than split in two
NARROW_ROW = 1024  # bytes: a column with rows narrower is read and checked whole (hashing row by row costs more)


@dataclass(frozen=True)
class ShardRef:
    """One shard of a store and which of its samples the store takes."""

    prefix: str  # the shard set: data, clusters/<k>
    name: str  # file name under <prefix>/shards
    sha256: str  # its content hash, as the manifest records it
    count: int  # samples in the file
    first_row: int  # data/ row of its first sample (cluster exports list their rows instead)
    chosen: torch.Tensor | None = None  # [n] sorted local indices of the samples taken; None: all of them

    @property
    def size(self) -> int:
        return self.count if self.chosen is None else len(self.chosen)

    @property
    def rel(self) -> str:
        return f"{layout.shards(self.prefix)}/{self.name}"


@dataclass
class ShardRows:
    """The chosen rows of one shard, decoded: tensors as stored (fp16 stays fp16), captions, data/ rows."""

    tensors: dict[str, torch.Tensor]
    captions: list[str]
    rows: torch.Tensor


def read_rows(run: RunDir, ref: ShardRef, columns: tuple[str, ...] = TRAINING_COLUMNS,
              checked: bool = False) -> ShardRows:
    """The chosen rows of those of `columns` the shard has, checked against their checksums before they are
    returned (paris.data.row_checksums), unless `checked` says this job checked the same rows when it first read
    them. A shard written before row checksums is checked whole against its content hash instead (reading all
    of it)."""
    header, header_end = read_header(run, ref)
    meta = header.pop("__metadata__")
    local = torch.arange(ref.count) if ref.chosen is None else ref.chosen
    if row_checksums.COLUMN not in header and not checked:
        read_shard(run, ref.prefix, {"name": ref.name, "sha256": ref.sha256})
    # A column is read whole, and checked by one hash, when most of its rows are chosen (the router's rows, a
    # cluster's export) or its rows are narrow (labels, token ids: a few MB a shard). Otherwise each chosen row
    # is read and checked by its own, and on an object store, where a request costs far more than the bytes
    # between two rows, runs of rows less than REMOTE_GAP apart are fetched as one range.
    names = [name for name in columns if name in header]
    whole = {name for name in names if 2 * len(local) >= ref.count or _row_bytes(header[name]) < NARROW_ROW}
    partial = [name for name in names if name not in whole]
    if partial and row_checksums.COLUMN in header:
        partial.append(row_checksums.COLUMN)
    gap = 0 if run.is_local else REMOTE_GAP // max((_row_bytes(header[name]) for name in partial), default=1)
    runs = {name: [(0, ref.count)] if name in whole else _runs(local, gap) for name in dict.fromkeys(names + partial)}
    spans = [[(header_end + header[name]["data_offsets"][0] + a * _row_bytes(header[name]),
               header_end + header[name]["data_offsets"][0] + b * _row_bytes(header[name])) for a, b in runs[name]]
             for name in runs]
    raws = dict(zip(runs, run.read_retrying(ref.rel, lambda: _fetch(run, ref.rel, spans))))
    if any(len(raws[name]) != sum(b - a for a, b in spans[i]) for i, name in enumerate(runs)):
        raise ParisError(f"shard {run.url}/{ref.rel} is shorter than its header says (truncated while being read?); "
                         f"delete it and rerun `paris prepare` to encode it again")
    fetched = torch.cat([torch.arange(a, b) for a, b in _runs(local, gap)]) if partial and len(local) else local
    # the chosen rows among those fetched of a column not read whole (None: all of them)
    where = None if len(fetched) == len(local) else torch.searchsorted(fetched, local)
    if not checked:
        _verify(run, ref, header, meta, raws, whole, fetched, torch.arange(len(fetched)) if where is None else where)
    tensors = {name: _column(raws[name], header[name], ref.count if name in whole else len(fetched),
                             None if len(local) == ref.count else local if name in whole else where)
               for name in names}
    captions = json.loads(meta["captions"])
    rows = torch.as_tensor(json.loads(meta["rows"])) if "rows" in meta else ref.first_row + torch.arange(ref.count)
    return ShardRows(tensors, [captions[i] for i in local.tolist()], rows[local])


def _verify(run: RunDir, ref: ShardRef, header: dict, meta: dict, raws: dict[str, bytearray], whole: set[str],
            fetched: torch.Tensor, chosen: torch.Tensor) -> None:
    """Refuse the shard when a metadata value a job reads, a column read whole, or a chosen row of another column
    (`chosen`: where among its `fetched` rows) does not match its checksum."""
    damaged = row_checksums.meta_mismatch(meta) or row_checksums.column_mismatch(meta, {n: raws[n] for n in whole})
    if damaged is None and row_checksums.COLUMN in raws and len(chosen):
        covered = json.loads(meta["checksummed"])
        table = torch.frombuffer(raws[row_checksums.COLUMN], dtype=torch.int64).view(len(fetched), len(covered))
        for name in sorted(set(raws) - whole - {row_checksums.COLUMN}):
            at = row_checksums.first_mismatch(raws[name], _row_bytes(header[name]), chosen.tolist(),
                                              table[chosen, covered.index(name)])
            if at is not None:
                damaged = f"its {name} (row {int(fetched[at])})"
                break
    if damaged:
        raise ParisError(f"shard {run.url}/{ref.rel} is damaged: {damaged} does not match its checksum (the file "
                         f"changed after it was written); delete it and rerun `paris prepare {run.url}` to encode it again")


def _column(raw: bytearray, info: dict, count: int, where: torch.Tensor | None) -> torch.Tensor:
    """A fetched column as a tensor of its `count` rows, or of those `where` picks."""
    dtype = DTYPES[info["dtype"]]
    column = (torch.frombuffer(raw, dtype=dtype) if raw else torch.zeros(0, dtype=dtype)).reshape(count, *info["shape"][1:])
    return column if where is None else column[where]


def read_columns(run: RunDir, names: list[str], prefix: str = layout.DATA, manifest: dict | None = None):
    """(first row, {name: tensor}) per shard of a shard set, in order, one shard in memory at a time: the
    partition streams the features and never reads the latents."""
    for ref in shard_refs(manifest or read_manifest(run, prefix), prefix):
        yield ref.first_row, read_rows(run, ref, tuple(names)).tensors


def shard_refs(manifest: dict, prefix: str, keep: torch.Tensor | None = None) -> list[ShardRef]:
    """The shards a manifest lists, in row order; with `keep` ([N] bool over its rows), only those rows. A shard
    lives under its entry's own prefix when it names one (data added to a run: `paris add-expert`)."""
    refs, first = [], 0
    for entry in manifest["shards"]:
        chosen = None if keep is None else keep[first : first + entry["count"]].nonzero()[:, 0]
        refs.append(ShardRef(entry.get("prefix", prefix), entry["name"], entry["sha256"], entry["count"], first, chosen))
        first += entry["count"]
    return refs


def read_header(run: RunDir, ref: ShardRef) -> tuple[dict, int]:
    """The shard's header, checked against the manifest: a file swapped or rewritten since is refused."""
    header, header_end = shard_header(run, ref.rel)
    if json.loads(header.get("__metadata__", {}).get("sha256", "null")) != ref.sha256:
        raise ParisError(f"{run.url}/{ref.rel} does not match {layout.manifest(ref.prefix)} (its hash differs): the "
                         f"shard was changed or replaced after prepare; delete it and rerun `paris prepare {run.url}`")
    return header, header_end


def read_captions(run: RunDir, ref: ShardRef) -> list[str]:
    """The chosen samples' captions, from the header alone."""
    captions = json.loads(read_header(run, ref)[0]["__metadata__"]["captions"])
    return captions if ref.chosen is None else [captions[i] for i in ref.chosen.tolist()]


def _fetch(run: RunDir, rel: str, spans: list[list[tuple[int, int]]]) -> list[bytearray]:
    """Per column, its byte ranges `spans` of one file, one after another: on a local disk, positioned reads of
    one open file straight into the column's buffer; otherwise the file system's own cat_ranges (s3fs sends the
    requests concurrently), joined."""
    if not run.is_local:
        flat = [span for column in spans for span in column]
        chunks = run.fs.cat_ranges([run.path(rel)] * len(flat), [a for a, _ in flat], [b for _, b in flat],
                                   on_error="raise")
        return [bytearray().join(chunks[sum(map(len, spans[:i])) : sum(map(len, spans[: i + 1]))])
                for i in range(len(spans))]
    buffers = []
    with open(run.path(rel), "rb") as f:
        for column in spans:
            buffer = bytearray(sum(b - a for a, b in column))
            view, at = memoryview(buffer), 0
            for a, b in column:
                got = os.preadv(f.fileno(), [view[at : at + b - a]], a)
                at += got
                if got < b - a:  # the file ends early: a short buffer says so
                    return buffers + [buffer[:at]]
            buffers.append(buffer)
    return buffers


def _row_bytes(info: dict) -> int:
    return math.prod(info["shape"][1:]) * DTYPES[info["dtype"]].itemsize


def _runs(local: torch.Tensor, gap: int = 0) -> list[tuple[int, int]]:
    """[(first, end)] row ranges covering `local` (sorted): runs of consecutive rows, joined across at most
    `gap` rows that are not chosen."""
    if len(local) == 0:
        return []
    breaks = ((local[1:] - local[:-1]) > gap + 1).nonzero()[:, 0] + 1
    firsts = torch.cat([local[:1], local[breaks]]).tolist()
    lasts = torch.cat([local[breaks - 1], local[-1:]]).tolist()
    return [(a, b + 1) for a, b in zip(firsts, lasts)]
