"""Training's memory and start-up time against the size of the store: synthetic stores of growing size, one
expert and the router trained on each for a few steps, and the loader's throughput.

    PYTHONPATH=. .venv/bin/python benchmarks/data_scale.py --out runs/data_scale                  # 100k, 500k, 2M
    PYTHONPATH=. .venv/bin/python benchmarks/data_scale.py --sizes 5000,20000 --out /tmp/data_scale
    PYTHONPATH=. .venv/bin/python benchmarks/data_scale.py --url s3://bucket/data_scale           # stores on S3

Each store is written with the store's own writer (paris.data.shard_format.write_shard, one shard in memory at a time)
and merged into a manifest by paris.data.merge, as `paris prepare` does: fp16 latents 4x32x32, 77 random CLIP
token ids (text_storage=tokens, encoded while training by a tiny random CLIP saved under OUT/tiny_clip), a
distinct random caption per sample, random labels and 32-d features; 2M samples take about 17 GB. The partition
is `paris partition --method random` (K balanced random clusters). Then, each in its own process,
`paris train-expert RUN --expert 0` and `paris train-router RUN` take --steps steps of the tiny presets: peak RSS
(the child's own rusage), wall time, and time to first step (when step 1 ended, the time of the first metrics
record with log_every=1, minus when the process was started: start-up, loading the data, one step). Every stage
is kept (the store and its partition in the run, the figures in OUT/data_scale.json): a rerun skips what is
done, --remeasure trains and loads again. Last, the loader reads a store of --s3-samples from an S3 server on
127.0.0.1 (testkit.s3: moto's, through s3fs), so its figure includes every byte crossing HTTP.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from paris import layout
from paris.clusters.export import load_cluster
from paris.clusters.partition import partition
from paris.config import DataConfig, PartitionConfig, RunConfig, TrainConfig
from paris.data.merge import merge
from paris.data.prepare import fingerprint
from paris.data.shard_format import read_manifest, write_shard
from paris.data.store import load_store
from paris.models.encoders import TextEncoder, build_text_encoder
from paris.run import RunDir
from paris.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
LATENT, TOKENS, FEATURES, LABELS = (4, 32, 32), 77, 32, 10
MEASURED = ("expert", "router", "loader", "verify")  # what --remeasure forgets


def data_config(clip: str, shard_size: int) -> DataConfig:
    """What the synthetic store claims to be: Paris's LAION recipe (256px through the SD VAE, CLIP, 77 tokens)."""
    return DataConfig(source="webdataset", path="synthetic", autoencoder="sd-vae", text_encoder="clip",
                      text_encoder_path=clip, max_tokens=TOKENS, text_storage="tokens", feature_dim=FEATURES,
                      shard_size=shard_size)


def captions(rng: np.random.Generator, words: list[str], n: int) -> list[str]:
    """n web-like captions of 4 to 14 words from a 5,000-word vocabulary: in practice all distinct."""
    lengths = rng.integers(4, 15, n)
    picks = rng.integers(0, len(words), lengths.sum())
    ends = np.cumsum(lengths)
    return [" ".join(words[j] for j in picks[end - length : end]) for end, length in zip(ends, lengths)]


def build_store(run: RunDir, n: int, config: RunConfig, text: TextEncoder) -> float:
    """Shards of random samples written one at a time, then the run's config and manifest; returns seconds."""
    cfg, stamp, began, shown = config.data, fingerprint(config), time.perf_counter(), 0.0
    vocab = text.model.config.vocab_size
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(3, 10))) for _ in range(5000)]
    entries, shards = [], -(-n // cfg.shard_size)
    for index in range(shards):
        count = min(cfg.shard_size, n - index * cfg.shard_size)
        g = torch.Generator().manual_seed(index)
        tensors = {"latents": torch.randn(count, *LATENT, generator=g).half(),
                   "labels": torch.randint(0, LABELS, (count,), generator=g),
                   "features": torch.randn(count, FEATURES, generator=g).half(),
                   "text_ids": torch.randint(0, vocab, (count, TOKENS), generator=g, dtype=torch.int32),
                   "text_mask": torch.ones(count, TOKENS, dtype=torch.bool)}  # CLIP attends to its padding
        first = index * cfg.shard_size
        meta = {"captions": captions(np.random.default_rng(index), words, count),
                "keys": [f"{i:09d}" for i in range(first, first + count)], "skipped": {}, "fingerprint": stamp,
                "positions": count}
        entries.append(write_shard(run, layout.DATA, index, tensors, meta))
        seconds = time.perf_counter() - began
        if seconds - shown >= 10 or index == shards - 1:  # a line at most every 10 s, and the last
            shown = seconds
            print(f"  build {n:,}: shard {index + 1}/{shards}, {first + count:,} samples, "
                  f"{(first + count) / seconds:,.0f} samples/s", flush=True)
    run.write_config(config)
    run.write_json(f"{layout.parts()}/000000-{shards:06d}.json", {
        "first": 0, "end": shards, "exhausted": True, "fingerprint": stamp, "data_config": dataclasses.asdict(cfg),
        "text_dim": text.dim, "shards": entries})
    merge(run)  # the manifest, as `paris prepare` writes it
    return time.perf_counter() - began


def paris(command: list[str], log: Path) -> dict:
    """`python -m paris ...` in its own process: its wall time, start time and peak RSS (its rusage, via wait4)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        started = time.time()
        process = subprocess.Popen([sys.executable, "-m", "paris", *command], stdout=f, stderr=subprocess.STDOUT,
                                   env=env, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"paris {' '.join(command)} failed (exit {process.returncode}); see {log}")
    rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB on Linux
    return {"started": started, "wall_s": time.time() - started, "peak_rss_gib": rss / 2**30}


def train_job(run: RunDir, job: str, steps: int, batch: int, log: Path) -> dict:
    """One training job from step 0 (its folder is removed first), logging every step."""
    section, folder, extra = ("expert", layout.expert(0), ["--expert", "0"]) if job == "expert" else ("router", layout.ROUTER, [])
    run.remove(folder)
    overrides = [f"--set={section}.{key}={value}" for key, value in
                 {"preset": "tiny", "steps": steps, "batch_size": batch, "log_every": 1, "threads": 1,
                  "tensorboard": "false"}.items()]
    result = paris([f"train-{job}", run.url, *extra, *overrides], log)
    first = read_metrics(run, folder)[0]["time"]
    return {"peak_rss_gib": result["peak_rss_gib"], "first_step_s": first - result["started"],
            "wall_s": result["wall_s"]}


def loader_throughput(run_url: str, batch_size: int, steps: int, verify: bool = True) -> dict:
    """Reading the store as a training job does, with the model a no-op: its order (shuffled windows of shards),
    read-ahead of the next window, and each step's batch as stored (fp16 latents, token ids, masks, captions).
    Twice: the whole store (the router, a monolith) and expert 0's rows of data/ (no export: one range per run
    of consecutive rows). The time to open the store, then samples/s over `steps` batches of `batch_size`.
    Without `verify`, the rows read are not hashed against their checksums: the baseline of what checking costs."""
    if not verify:
        from paris.data import shard_reader

        shard_reader._verify = lambda *args: None
    run = RunDir(run_url)
    began = time.perf_counter()
    stores = {"all": load_store(run), "expert": load_cluster(run, 0)[1]}
    opened = time.perf_counter()
    rates = {}
    for name, store in stores.items():
        batches = store.batches(batch_size, seed=0, shuffle_buffer=TrainConfig.shuffle_buffer)
        tick = time.perf_counter()
        for step in range(steps):
            store.prefetch(batches.next_window(step))
            store.batch(batches(step))
        rates[name] = steps * batch_size / (time.perf_counter() - tick)
    return {"load_s": opened - began, "samples_per_s": rates["all"], "expert_samples_per_s": rates["expert"]}


def verify_cost(run_url: str, rounds: int = 3) -> dict:
    """The loader with and without checking each row's checksum, alternated `rounds` times in fresh processes (the
    page cache warm for both): the best samples/s of each and their ratio."""
    best = {True: {}, False: {}}
    for _ in range(rounds):
        for verify in (False, True):
            rates = in_fresh_process(loader_throughput, run_url, 256, 200, verify)
            for key in ("samples_per_s", "expert_samples_per_s"):
                best[verify][key] = max(best[verify].get(key, 0), rates[key])
    return {"unverified": best[False], "verified": best[True],
            "ratio": {key: best[True][key] / best[False][key] for key in best[True]}}


def s3_loader_throughput(n: int, config: RunConfig, text: TextEncoder) -> dict:
    """The loader reading a store of n samples from an S3 server on 127.0.0.1 (moto's, as the tests use, through
    s3fs as a user's run reads AWS): every byte crosses HTTP. The server keeps objects in memory: n stays small."""
    from testkit.s3 import s3_server

    with s3_server() as url:
        run = RunDir(f"{url}/n{n}")
        build_store(run, n, config, text)
        partition(run, PartitionConfig(num_clusters=4, method="random", montage_images=0))
        return {"samples": n, **in_fresh_process(loader_throughput, run.url, 256, 200)}


def measure(run: RunDir, row: dict, args, logs: Path, save) -> None:
    """The stages of one size not yet in `row`, each saved (`save()`) as soon as it is measured."""
    stages = {"expert": lambda: train_job(run, "expert", args.steps, args.batch_size, logs / "expert.log"),
              "router": lambda: train_job(run, "router", args.steps, args.batch_size, logs / "router.log"),
              "loader": lambda: in_fresh_process(loader_throughput, run.url, 256, 200),
              "verify": lambda: verify_cost(run.url)}
    for name, stage in stages.items():
        if name not in row:
            row[name] = stage()
            save()


def in_fresh_process(function, *args):
    """function(*args) in a new interpreter, so that this one never holds a whole store."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def markdown(rows: list[dict]) -> str:
    def cell(value, fmt):
        return "–" if value is None else format(value, fmt)

    head = ("| samples | GB on disk | build (s) | expert peak RSS (GiB) | expert to first step (s) | expert wall (s) "
            "| router peak RSS (GiB) | router to first step (s) | router wall (s) | store load (s) "
            "| loader samples/s: all | expert's rows |\n" + "|---:" * 12 + "|\n")
    return head + "".join(
        f"| {r['samples']:,} | {r['gb']:.2f} | {cell(r.get('build_s'), '.1f')} | "
        + "".join(f"{r[j]['peak_rss_gib']:.2f} | {r[j]['first_step_s']:.1f} | {r[j]['wall_s']:.1f} | "
                  for j in ("expert", "router"))
        + f"{r['loader']['load_s']:.1f} | {r['loader']['samples_per_s']:,.0f} | "
          f"{r['loader']['expert_samples_per_s']:,.0f} |\n" for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,500000,2000000", help="Comma-separated store sizes (samples).")
    parser.add_argument("--out", default="runs/data_scale", help="Local folder: results, logs, the text encoder "
                        "(and the stores, unless --url).")
    parser.add_argument("--url", default=None, help="Base URL of the stores (s3://bucket/path, any fsspec URL); "
                        "default: OUT/stores.")
    parser.add_argument("--clusters", type=int, default=4, help="K of the random balanced partition.")
    parser.add_argument("--steps", type=int, default=50, help="Training steps of each job.")
    parser.add_argument("--batch-size", type=int, default=32, help="Batch of the expert and the router.")
    parser.add_argument("--shard-size", type=int, default=10000, help="Samples per shard (data.shard_size).")
    parser.add_argument("--remeasure", action="store_true", help="Train and load again; keep stores and build times.")
    parser.add_argument("--s3-samples", type=int, default=100000, help="Size of the store the loader reads from a "
                        "local S3 server (held in its memory); 0: skip.")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    base = (args.url or str(out / "stores")).rstrip("/")
    results_path = out / "data_scale.json"
    saved = json.loads(results_path.read_text())["rows"] if results_path.exists() else []
    rows = {r["samples"]: r for r in saved}
    sizes = sorted(int(s) for s in args.sizes.split(","))

    def save(**extra) -> None:  # every size measured so far, this time or before
        results_path.write_text(json.dumps({"rows": [rows[n] for n in sorted(rows)], **extra}, indent=2))

    clip = out / "tiny_clip"
    if not (clip / "config.json").exists():
        from testkit.tiny_encoders import save_tiny_clip

        save_tiny_clip(clip)
    text = build_text_encoder("clip", str(clip), TOKENS)
    for n in sizes:
        run, row = RunDir(f"{base}/n{n}"), rows.setdefault(n, {"samples": n})
        building = not run.exists(layout.manifest())
        for stage in MEASURED if args.remeasure or building else ():  # figures of another store are stale
            row.pop(stage, None)
        if building:
            run.remove("partition")
            row["build_s"] = build_store(run, n, RunConfig(data=data_config(str(clip), args.shard_size)), text)
        row["gb"] = sum(e["bytes"] for e in read_manifest(run)["shards"]) / 1e9
        if not run.exists(layout.PARTITION_META):
            partition(run, PartitionConfig(num_clusters=args.clusters, method="random", montage_images=0))
        measure(run, row, args, out / "logs" / f"n{n}", save)
        print(f"  {n:,}: measured", flush=True)
    small, large = rows[sizes[0]], rows[sizes[-1]]
    ratio = {job: large[job]["peak_rss_gib"] / small[job]["peak_rss_gib"] for job in ("expert", "router")}
    saved_s3 = json.loads(results_path.read_text()).get("s3_loader") or {}
    s3 = saved_s3 if saved_s3.get("samples") == args.s3_samples and not args.remeasure else \
        s3_loader_throughput(args.s3_samples, RunConfig(data=data_config(str(clip), args.shard_size)), text) \
        if args.s3_samples else None
    save(rss_ratio_largest_to_smallest={"sizes": [sizes[-1], sizes[0]], **ratio}, s3_loader=s3)
    print(markdown([rows[n] for n in sizes]))
    print(f"peak RSS, {large['samples']:,} samples against {small['samples']:,}: expert {ratio['expert']:.2f}x, "
          f"router {ratio['router']:.2f}x")
    for n in sizes:
        cost = rows[n]["verify"]
        print(f"checking every row read, {n:,} samples: loader (best of 3, samples/s) all "
              f"{cost['unverified']['samples_per_s']:,.0f} -> {cost['verified']['samples_per_s']:,.0f} "
              f"({cost['ratio']['samples_per_s']:.3f}x), expert 0's rows {cost['unverified']['expert_samples_per_s']:,.0f}"
              f" -> {cost['verified']['expert_samples_per_s']:,.0f} ({cost['ratio']['expert_samples_per_s']:.3f}x)")
    if s3:
        print(f"loader over s3:// (a local S3 server, {s3['samples']:,} samples): {s3['samples_per_s']:,.0f} samples/s "
              f"(all), {s3['expert_samples_per_s']:,.0f} samples/s (expert 0's rows of data/)")
    print(f"wrote {results_path}")


if __name__ == "__main__":
    main()
