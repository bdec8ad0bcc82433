"""Per-row checksums in a shard: what lets a job verify every byte it reads when it reads only some rows.

A shard's content hash (paris.data.shard_format.content_hash) covers the whole file, but a job fetches only its
columns and rows (paris.data.shard_reader). So every shard also holds the tensor `checksums` [n, C] int64: the
xxh3-64 of each row of each of its C columns (their names, in order, in the metadata `checksummed`), and in its
metadata `checksummed_meta` the xxh3-64 of the metadata values a job reads (the captions' JSON text), and in
`checksummed_columns` that of each whole column. The first time a job reads a shard, a column of which it takes
most rows (or whose rows are narrow) is read whole and checked by one hash, otherwise each row it takes by its
own, in the thread that read them (paris.data.shard_reader.read_rows).
xxh3 because it hashes faster than the loader copies bytes (sha256 would slow the loader several-fold). It
catches damage (bit rot, an edited or half-copied file), not a forger who rewrites the checksums too.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from xxhash import xxh3_64_intdigest

COLUMN = "checksums"
META_KEYS = ("captions", "rows")  # metadata values that training reads (rows: a cluster export's rows of data/)


def checksum_entries(tensors: dict[str, torch.Tensor], meta: dict) -> tuple[dict, dict]:
    """(the checksum column, the metadata that names what it covers) of a shard about to be written."""
    names = sorted(tensors)
    count = len(next(iter(tensors.values()))) if tensors else 0
    table = torch.zeros(count, len(names), dtype=torch.int64)
    for c, name in enumerate(names):
        column = tensors[name].contiguous()
        raw = column.view(torch.uint8).numpy().tobytes() if column.numel() else b""
        table[:, c] = digests(raw, len(raw) // max(count, 1), range(count))
    # save_tensors writes each metadata value as json.dumps(value): the text a reader gets back, and hashes.
    covered = {key: xxh3_64_intdigest(json.dumps(meta[key]).encode()) for key in META_KEYS if key in meta}
    whole = {name: xxh3_64_intdigest(tensors[name].contiguous().view(torch.uint8).numpy().tobytes()) for name in names}
    return {COLUMN: table}, {"checksummed": names, "checksummed_meta": covered, "checksummed_columns": whole}


def digests(raw: bytes | bytearray, row_bytes: int, rows) -> torch.Tensor:
    """[len(rows)] int64: the xxh3-64 of each of `rows` of a column whose rows are `row_bytes` long in `raw`."""
    view = memoryview(raw)
    values = [xxh3_64_intdigest(view[i * row_bytes : (i + 1) * row_bytes]) for i in rows]
    return torch.from_numpy(np.array(values, dtype=np.uint64).view(np.int64))


def first_mismatch(raw: bytes | bytearray, row_bytes: int, rows: list[int], expected: torch.Tensor) -> int | None:
    """The first of `rows` (positions in `raw`) whose bytes do not hash to `expected` (one value per row), or None."""
    wrong = (digests(raw, row_bytes, rows) != expected).nonzero()
    return rows[int(wrong[0])] if len(wrong) else None


def meta_mismatch(meta: dict[str, str]) -> str | None:
    """What names the first metadata value (as the header holds it: JSON text) that does not hash to its checksum."""
    covered = json.loads(meta.get("checksummed_meta", "{}"))
    key = next((key for key, value in covered.items() if xxh3_64_intdigest(meta[key].encode()) != value), None)
    return None if key is None else f"its {key} metadata"


def column_mismatch(meta: dict[str, str], raws: dict[str, bytes | bytearray]) -> str | None:
    """What names the first of these whole columns (every row, as stored) that does not hash to its checksum."""
    whole = json.loads(meta.get("checksummed_columns", "{}"))
    name = next((name for name, raw in raws.items() if name in whole and xxh3_64_intdigest(raw) != whole[name]), None)
    return None if name is None else f"its {name}"
