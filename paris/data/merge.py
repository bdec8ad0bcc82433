"""`paris merge RUN`: join the parts written by `paris prepare --shard-range` into data/manifest.json.

Parts may come from many machines, in any order, and may overlap (a range encoded twice gives the same
shards). The merge refuses anything that would lose or duplicate a sample: parts of different configs,
one shard with two different contents, a gap in the shard indices, or no part that reached the source's end.
"""

from __future__ import annotations

import hashlib
from collections import Counter

from paris import layout
from paris.data.source_digest import combined
from paris.errors import ParisError
from paris.run import RunDir


def merge(run: RunDir, prefix: str = layout.DATA) -> dict:
    parts = _read_parts(run, prefix)
    _refuse_mixed_parts(run, prefix, parts)
    entries = _shard_entries(run, prefix, parts)
    manifest = _manifest(next(iter(parts.values())), entries)
    run.write_json(layout.manifest(prefix), manifest)  # last: the store exists once this does
    return manifest


def _read_parts(run: RunDir, prefix: str) -> dict[str, dict]:
    """Every part written under the prefix, by file name."""
    names = [n for n in run.list(layout.parts(prefix)) if n.endswith(".json")]
    if not names:
        raise ParisError(f"no prepared parts in {run.url}/{layout.parts(prefix)}; run `paris prepare {run.url}` "
                         f"(or `--shard-range FIRST:END` on each machine) first")
    return {name: run.read_json(f"{layout.parts(prefix)}/{name}") for name in names}


def _refuse_mixed_parts(run: RunDir, prefix: str, parts: dict[str, dict]) -> None:
    """Parts joined into one data set must have been encoded alike."""
    names = list(parts)
    stamps = {part["fingerprint"] for part in parts.values()}
    if len(stamps) > 1:
        raise ParisError(f"the parts in {run.url}/{layout.parts(prefix)} were prepared with different data configs "
                         f"({', '.join(names)}); prepare every range with the same config")
    encoders = {part.get("feature_encoder") for part in parts.values()}
    if len(encoders) > 1:  # a learned feature extractor trained apart on two machines: two feature spaces
        raise ParisError(f"the parts in {run.url}/{layout.parts(prefix)} were encoded with differently trained "
                         f"feature encoders ({', '.join(names)}); encode every "
                         "range with one: copy the machine cache's file (~/.cache/paris/simclr-*) of the first "
                         "machine to the others and prepare their ranges again")


def _shard_entries(run: RunDir, prefix: str, parts: dict[str, dict]) -> list[dict]:
    """The manifest entry of every shard from 0 to the source's end, once each, every file present: refused if a
    shard was encoded twice differently, is missing, or holds no usable image at all."""
    shards: dict[int, dict] = {}
    for name, part in parts.items():
        for entry in part["shards"]:
            seen = shards.setdefault(entry["index"], entry)
            if seen["sha256"] != entry["sha256"]:
                raise ParisError(f"shard {entry['index']} was prepared twice with different contents (see {name}); "
                                 f"delete {run.url}/{layout.shards(prefix)}/{entry['name']} and the parts naming it, and prepare it again")
    ends = [part["end"] for part in parts.values() if part["exhausted"]]
    if not ends:
        last = max(part["end"] for part in parts.values())
        raise ParisError(f"no part reached the end of the data set; prepare the rest with `--shard-range {last}:`")
    end = min(ends)
    gaps = [i for i in range(end) if i not in shards]
    if gaps:
        raise ParisError(f"shards {_ranges(gaps)} are missing; prepare them with `paris prepare {run.url} "
                         f"--shard-range {gaps[0]}:{gaps[-1] + 1}`, then merge again")
    entries = [shards[i] for i in range(end)]
    if not any(e["count"] for e in entries):
        path = next(iter(parts.values()))["data_config"]["path"]
        raise ParisError(f"the data set at {path} has no usable image; check data.path")
    missing = missing_shards(run, {"shards": entries}, prefix)
    if missing:
        raise ParisError(f"{run.url}/{layout.shards(prefix)}/{missing[0]['name']} does not match its part (missing or another "
                         f"size); rerun `paris prepare {run.url}` to encode it again")
    return entries


def _manifest(part: dict, entries: list[dict]) -> dict:
    """data/manifest.json: the data set's counts and encoders (alike in every part, so read from one) and its shards."""
    cfg = part["data_config"]
    sample = next((e for e in entries if e["count"]), entries[0])
    return {
        "source": cfg["source"],
        "path": cfg["path"],
        "split": cfg["split"],
        "count": sum(e["count"] for e in entries),
        "skipped": dict(sum((Counter(e["skipped"]) for e in entries), Counter())),
        "latent_shape": sample["latent_shape"],
        "feature_dim": sample["feature_dim"],
        "text_dim": part["text_dim"],
        "max_tokens": cfg["max_tokens"],
        "text_storage": cfg["text_storage"],
        "encoders": {key: cfg[key] for key in ("autoencoder", "autoencoder_path", "latent_scale", "text_encoder",
                                               "text_encoder_path", "max_tokens", "features", "features_path",
                                               "feature_pooling")},
        "data_config": cfg,
        "fingerprint": part["fingerprint"],
        "content": combined([e.get("source_digest") for e in entries]),  # paris.data.source_digest
        "feature_encoder": part.get("feature_encoder"),
        "class_names": part.get("class_names"),
        "empty_text": part.get("empty_text"),
        "shards": entries,
        "data_hash": data_hash(entries),
    }


def data_hash(entries: list[dict]) -> str:
    """The identity of a data set: its shards' content hashes, in order (a partition records the one it split)."""
    return hashlib.sha256("".join(e["sha256"] for e in entries).encode()).hexdigest()[:16]


def missing_shards(run: RunDir, manifest: dict, prefix: str = layout.DATA) -> list[dict]:
    """Manifest entries whose shard file is absent or of another size (a cheap check: no bytes are read)."""
    missing = []
    for entry in manifest["shards"]:
        path = run.path(f"{layout.shards(entry.get('prefix', prefix))}/{entry['name']}")
        if not run.fs.exists(path) or run.fs.size(path) != entry["bytes"]:
            missing.append(entry)
    return missing


def _ranges(indices: list[int]) -> str:
    """[3, 4, 5, 9] -> '3-5, 9'."""
    groups, start = [], indices[0]
    for a, b in zip(indices, indices[1:] + [None]):
        if b != a + 1:
            groups.append(f"{start}-{a}" if a > start else str(a))
            start = b
    return ", ".join(groups)
