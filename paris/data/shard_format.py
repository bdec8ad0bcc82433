"""The file format of a run's prepared data: fixed-size safetensors shards plus a manifest.

Layout written by `paris prepare` (and, per cluster, by `paris export-clusters` under clusters/<k>/):
  data/shards/000000.safetensors  one shard = `shard_size` source positions; columns
      latents [n,C,H,W] fp16 · labels [n] int64 · features [n,F] fp16 (what the partition clusters) ·
      text_ids [n,L] int32 (text_storage=tokens) or text_states [n,L,D] fp16 (embeddings) · text_mask [n,L]
      and, in the safetensors metadata, the captions, source keys and skipped counts of the shard
  data/parts/<first>-<end>.json   what one `prepare --shard-range` wrote (merged into the manifest)
  data/manifest.json              written last: counts, skipped counts, encoders, shard list with hashes
Text is per sample (11M captions are 11M distinct strings); caption dropout uses the empty prompt "".
Training streams the shards (paris.data.store); the functions here write, check and scan them.
"""

from __future__ import annotations

import hashlib
import json

import torch

from paris import layout, tensor_file
from paris.data.row_checksums import checksum_entries
from paris.errors import ParisError
from paris.run import RunDir

REENCODE = "delete it and rerun `paris prepare` to encode it again"


def shard_name(index: int) -> str:
    return f"{index:06d}.safetensors"


def write_shard(run: RunDir, prefix: str, index: int, tensors: dict, meta: dict) -> dict:
    """Write one shard atomically, with its rows' checksums (paris.data.row_checksums) and its content hash in its
    own header; returns its manifest entry."""
    rel = f"{layout.shards(prefix)}/{shard_name(index)}"
    column, covered = checksum_entries(tensors, meta)
    tensors, meta = {**tensors, **column}, {**meta, **covered}
    run.save_tensors(rel, tensors, metadata={**meta, "sha256": content_hash(tensors, meta)})
    return shard_entry(run, rel, index)


def shard_entry(run: RunDir, rel: str, index: int) -> dict | None:
    """What a manifest records of a shard (size and hash to check it, counts and shapes to merge), read
    from its header alone; None when the file is incomplete (cut short by a store that is not atomic)."""
    try:
        header, header_end = shard_header(run, rel)
        meta = {k: json.loads(v) for k, v in header.pop("__metadata__").items()}
        digest = meta["sha256"]
        size = run.fs.size(run.path(rel))
        complete = size == header_end + max(t["data_offsets"][1] for t in header.values())
    except (ParisError, ValueError, KeyError):  # a header cut short, or not a shard at all
        return None
    if not complete:
        return None
    count = header["labels"]["shape"][0]
    return {"index": index, "name": shard_name(index), "count": count, "bytes": size,
            "sha256": digest, "skipped": meta.get("skipped", {}), "positions": meta.get("positions", count),
            "fingerprint": meta.get("fingerprint"), "source_digest": meta.get("source_digest"),
            "latent_shape": header["latents"]["shape"][1:],
            # generated samples (paris.train.expert_samples) have no clustering features
            "feature_dim": header["features"]["shape"][1] if "features" in header else None}


def shard_header(run: RunDir, rel: str) -> tuple[dict, int]:
    """The checked JSON header of a shard (tensor dtypes, shapes, byte offsets; metadata), and where it ends;
    a damaged one is a ParisError (paris.tensor_file). The tensors' bytes are checked where they are read."""
    return tensor_file.read_header(run, rel, data=False, remedy=REENCODE)


def content_hash(tensors: dict[str, torch.Tensor], meta: dict) -> str:
    """A hash of what a shard holds. Not of its bytes: safetensors writes its header keys in no fixed order."""
    meta = {k: v for k, v in meta.items() if k != "sha256"}
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for key in sorted(tensors):
        h.update(key.encode())
        h.update(tensors[key].contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def parse_shard(data: bytes, where: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata of a shard file; a truncated or foreign file is a ParisError."""
    tensors, meta = tensor_file.parse(data, f"shard {where}", REENCODE)
    try:
        return tensors, {k: json.loads(v) for k, v in meta.items()}
    except json.JSONDecodeError:
        raise ParisError(f"shard {where} has metadata that is not JSON; {REENCODE}") from None


def read_shard(run: RunDir, prefix: str, entry: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """A shard listed in a manifest, checked against the manifest's hash."""
    rel = f"{layout.shards(prefix)}/{entry['name']}"
    tensors, meta = parse_shard(run.read_bytes(rel), f"{run.url}/{rel}")
    if content_hash(tensors, meta) != entry["sha256"]:
        raise ParisError(f"{run.url}/{rel} does not match {prefix}/manifest.json (its hash differs): the shard "
                         f"was changed or replaced after prepare; delete it and rerun `paris prepare {run.url}`")
    return tensors, meta


def read_manifest(run: RunDir, prefix: str = layout.DATA) -> dict:
    return run.read_json(layout.manifest(prefix))


def iter_shards(run: RunDir, prefix: str = layout.DATA, manifest: dict | None = None):
    """(first row, tensors, metadata) of every shard, in order: one shard in memory at a time."""
    manifest = manifest or read_manifest(run, prefix)
    row = 0
    for entry in manifest["shards"]:
        tensors, meta = read_shard(run, entry.get("prefix", prefix), entry)
        yield row, tensors, meta
        row += entry["count"]
