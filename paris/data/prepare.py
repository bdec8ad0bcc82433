"""`paris prepare`: read a data set, encode it (latents, text, clustering features) into the run's store.

Shard i holds source positions [i * shard_size, (i+1) * shard_size), so the work splits by shard index:
  paris prepare RUN                      every shard, then the manifest
  paris prepare RUN --shard-range 0:500  on one machine, --shard-range 500: on another, then `paris merge RUN`
Each shard file is written whole (or not at all); rerunning after a kill keeps every complete shard whose
config matches and encodes the rest, so no sample is lost or stored twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import time
from collections import Counter

from paris import layout
from paris import progress
from paris.config import RunConfig
from paris.models.encoders import build_text_encoder, default_device
from paris.data.merge import merge, missing_shards
from paris.data.shard_encoder import ShardEncoder
from paris.data.source_digest import samples_digest
from paris.data.sources import open_source
from paris.data.shard_format import read_manifest, shard_entry, write_shard
from paris.errors import ParisError
from paris.run import RunDir



def parse_shard_range(text: str) -> tuple[int, int | None]:
    """'A:B' -> (A, B), 'A:' -> (A, None): shards A..B-1, or from A to the end of the source."""
    first, sep, end = text.partition(":")
    try:
        result = int(first or 0), int(end) if end else None
    except ValueError:
        result = None
    if not sep or result is None or result[0] < 0 or (result[1] is not None and result[1] <= result[0]):
        raise ParisError(f"bad --shard-range {text!r}; write FIRST:END (shards FIRST..END-1) or FIRST: (to the end)")
    return result


def fingerprint(config: RunConfig) -> str:
    """What the stored bytes depend on; shards and parts of another fingerprint are never mixed."""
    data = dataclasses.asdict(config.data)
    for key in ("batch_size", "decode_threads"):  # how fast, not what
        data.pop(key)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def prepare(run: RunDir, config: RunConfig, shard_range: tuple[int, int | None] = (0, None), device: str = "",
            prefix: str = layout.DATA) -> dict:
    """Encode shards `shard_range` of the configured data set into RUN/<prefix> (the run's data/, or a data set
    added later), running the encoders on `device` (default: the first GPU, else the CPU); with the whole range,
    also merge them into <prefix>/manifest.json and return it (else return the part manifest)."""
    cfg, stamp = config.data, fingerprint(config)
    whole = shard_range == (0, None)
    if whole and run.exists(layout.manifest(prefix)):
        manifest = read_manifest(run, prefix)
        if manifest["fingerprint"] != stamp:
            raise ParisError(f"{run.url}/{prefix} holds data prepared with another data config; prepare into a new "
                             f"run directory, or delete {run.url}/{prefix} (and what was made from it) to replace it")
        if not missing_shards(run, manifest, prefix):
            progress.say(f"prepare: {run.url}/{prefix} is complete ({manifest['count']} images); nothing to do")
            return manifest
    source = open_source(cfg)
    device = device or default_device()
    text = build_text_encoder(cfg.text_encoder, cfg.text_encoder_path, cfg.max_tokens, device)
    encoders = ShardEncoder(cfg, source, text, device)
    if prefix == layout.DATA:
        run.write_config(config)  # only once the data and the encoders are known to load
    first, end = shard_range
    done = _complete_shards(run, prefix, first, end, stamp)
    progress.say(f"prepare: {cfg.source} {cfg.path} -> {run.url}/{prefix}, shards {first}:{'' if end is None else end}"
                  f" ({len(done)} already complete)")
    entries, index, exhausted = _encode_range(run, prefix, cfg, encoders, first, end, done, stamp)
    part = {"first": first, "end": index, "exhausted": exhausted, "fingerprint": stamp,
            "data_config": dataclasses.asdict(cfg), "text_dim": text.dim, "shards": entries,
            "feature_encoder": encoders.feature_identity}
    if cfg.text_storage == "embeddings":
        states, mask = text.encode([""])
        part["empty_text"] = {"states": states[0].half().tolist(), "mask": mask[0].tolist()}
    if source.class_names:
        part["class_names"] = source.class_names
    run.write_json(f"{layout.parts(prefix)}/{first:06d}-{part['end']:06d}.json", part)
    kept = sum(e["count"] for e in entries)
    progress.say(f"encoded shards {first}..{part['end'] - 1}: {kept} images kept, skipped: "
                  f"{_reasons(_total_skipped(entries)) or 'none'}")
    return merge(run, prefix) if whole else part


def _encode_range(run: RunDir, prefix: str, cfg, encoders, first: int, end: int | None, done: dict, stamp: str):
    """Shards first..end-1 (or to the source's end): reuse the complete ones, encode the others.
    Returns their manifest entries, the index after the last one, and whether the source ended."""
    source, entries, stream, at = encoders.source, [], None, None
    index = first
    with progress.bar("encoding", getattr(source, "size", None), first * cfg.shard_size, "images") as bar:
        meter = Meter(bar)
        while end is None or index < end:
            if index in done:
                entry, positions, encoded = done[index], done[index]["positions"], False
            else:
                if at != index * cfg.shard_size:  # (re)open the source where this shard starts
                    stream, at = source.samples(index * cfg.shard_size), index * cfg.shard_size
                samples = list(itertools.islice(stream, cfg.shard_size))
                at += len(samples)
                if not samples:
                    return entries, index, True
                tensors, meta = encoders.shard(samples, index * cfg.shard_size, stamp)
                meta["source_digest"] = samples_digest(samples)  # the data's identity by content, not by path
                if not meta["captions"] and not any(e["count"] for e in entries):
                    raise ParisError(f"none of the {len(samples)} samples of shard {index} could be used "
                                     f"({_reasons(meta['skipped'])}); {_hint(meta['skipped'])}")
                entry, positions, encoded = write_shard(run, prefix, index, tensors, meta), len(samples), True
            entries.append(entry)
            meter.advance(positions, encoded)
            index += 1
            if positions < cfg.shard_size:  # a short shard is the last one
                return entries, index, True
    return entries, index, False


def _complete_shards(run: RunDir, prefix: str, first: int, end: int | None, stamp: str) -> dict[int, dict]:
    """Shards of this range already on storage, whole and of this config: resume keeps them. Only their
    headers are read (each holds its content hash); a shard's bytes are checked whenever it is loaded."""
    done = {}
    for name in run.list(layout.shards(prefix)):
        index = int(name.split(".")[0]) if name.endswith(".safetensors") else -1
        if index < first or (end is not None and index >= end):
            continue
        entry = shard_entry(run, f"{layout.shards(prefix)}/{name}", index)
        if entry is None:
            progress.say(f"shard {name} is truncated or corrupt; encoding it again", warning=True)
        elif entry["fingerprint"] == stamp:
            done[index] = entry
    return done


class Meter:
    """Moves a progress bar over source positions, showing images/s of this run's encoding (not of the
    shards an earlier run left complete)."""

    def __init__(self, bar: progress.Bar):
        self.bar, self.began, self.encoded = bar, time.perf_counter(), 0

    def advance(self, positions: int, encoded: bool) -> None:
        self.encoded += positions if encoded else 0
        rate = self.encoded / max(time.perf_counter() - self.began, 1e-9)
        self.bar.update(advance=positions, **{"img/s": f"{rate:.1f}"})


def _total_skipped(entries: list[dict]) -> dict:
    return dict(sum((Counter(e["skipped"]) for e in entries), Counter()))


def _reasons(skipped: dict) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(skipped.items()))


def _hint(skipped: dict) -> str:
    if skipped.get("no_caption"):
        return "no captions found: put a .txt beside each image, or name the caption column in data.caption_column"
    return "check data.path, data.source and data.min_image_size"
