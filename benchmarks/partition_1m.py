"""Partition 1,000,000 random 1024-d features -> 1024 fine -> 8 coarse clusters through `paris.clusters.partition`.

    /usr/bin/time -v .venv/bin/python benchmarks/partition_1m.py [RUN_DIR]

Writes a synthetic store (100 shards of 10,000 samples; features stored as the store keeps them, fp16,
drawn as float32 N(0,1); 1-element latents so the store is mostly features), then times the partition.
Peak memory: the "Maximum resident set size" line of /usr/bin/time -v.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import time

import torch

from paris.data.shard_format import write_shard
from paris.clusters.partition import partition
from paris.config import PartitionConfig
from paris.run import RunDir

N, DIM, SHARD = 1_000_000, 1024, 10_000


def synthetic_store(url: str) -> RunDir:
    run = RunDir(url)
    generator = torch.Generator().manual_seed(0)
    entries = []
    for index in range(N // SHARD):
        tensors = {"features": torch.randn(SHARD, DIM, generator=generator).half(),
                   "latents": torch.zeros(SHARD, 1, 1, 1, dtype=torch.float16),
                   "labels": torch.full((SHARD,), -1, dtype=torch.int64)}
        entries.append(write_shard(run, "data", index, tensors, {"captions": [""] * SHARD}))
    run.write_json("data/manifest.json", {
        "count": N, "feature_dim": DIM, "shards": entries, "class_names": None,
        "encoders": {"autoencoder": "identity", "autoencoder_path": "", "latent_scale": 1.0},
        "data_hash": hashlib.sha256("".join(e["sha256"] for e in entries).encode()).hexdigest()[:16]})
    return run


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "/tmp/paris-partition-1m"
    shutil.rmtree(url, ignore_errors=True)
    tick = time.perf_counter()
    run = synthetic_store(url)
    print(f"wrote the synthetic store: {time.perf_counter() - tick:.1f} s")
    tick = time.perf_counter()
    part = partition(run, PartitionConfig(num_clusters=8, seed=0, fine_clusters=1024))
    seconds = time.perf_counter() - tick
    print(f"partition of {N} x {DIM}: {seconds:.1f} s ({part.meta['fine_clusters']} fine centroids trained on "
          f"{part.meta['train_points']} points, sizes {part.meta['sizes']})")


if __name__ == "__main__":
    main()
