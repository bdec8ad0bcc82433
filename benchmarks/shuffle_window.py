"""Does reading shards a window at a time change training? The demo's expert 0 trained with a full shuffle of
every epoch against shuffled windows of shards (the streaming order), loss curve by loss curve.

    .venv/bin/python benchmarks/shuffle_window.py                 # about 10 minutes on one core

The demo's data (60,000 Fashion-MNIST images in 6 shards of 10,000, prepared once under OUT/run) and partition
(K=4); expert 0 takes the demo's 1,800 steps of 64 with `expert.shuffle_buffer` set to
  - full: larger than the data, so every epoch is one shuffle of all the cluster's samples (the old order);
  - default: 16,384 samples, what a job uses unless told otherwise;
  - one shard: 1 sample, so every window is a single shard (the least mixing the order allows).
Printed: the final logged loss of each, and the mean and largest gap between its loss curve and the full
shuffle's, against the gap between two full shuffles that differ only in their seed (the noise floor).
Each job resumes if stopped; a finished one is not trained again.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

from paris import layout
from paris.clusters.partition import partition
from paris.data.prepare import prepare
from paris.demo import demo_config
from paris.run import RunDir
from paris.train.metrics import read_metrics

ORDERS = {"full": (10**9, 0), "full, another seed": (10**9, 1), "default": (16384, 0), "one shard": (1, 0)}


def trained(base: Path, name: str, buffer: int, seed: int) -> list[dict]:
    """Expert 0 of a hard-linked copy of the base run with this order; its logged losses."""
    folder = base.parent / name.replace(" ", "-").replace(",", "")
    if not (folder / layout.final(layout.expert(0)) / "manifest.json").exists():
        if not folder.exists():
            shutil.copytree(base, folder, copy_function=os.link, ignore=shutil.ignore_patterns("experts"))
        command = [sys.executable, "-m", "paris", "train-expert", str(folder), "--expert", "0",
                   "--set", f"expert.shuffle_buffer={buffer}", "--set", f"expert.seed={seed}"]
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    return read_metrics(RunDir(str(folder)), layout.expert(0))


def gaps(a: list[dict], b: list[dict]) -> tuple[float, float]:
    """Mean and largest |loss_a - loss_b| over the logged steps, leaving out the first 10% (warm-up)."""
    pairs = [(x["loss"], y["loss"]) for x, y in zip(a, b)][len(a) // 10 :]
    diffs = [abs(x - y) for x, y in pairs]
    return sum(diffs) / len(diffs), max(diffs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/shuffle_window")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    args = parser.parse_args()
    base = Path(args.out) / "base"
    run = RunDir(str(base))
    config = demo_config(args.data)
    config = dataclasses.replace(config, expert=dataclasses.replace(config.expert, log_every=50))
    if not run.exists(layout.PARTITION_META):
        prepare(run, config)
        run.write_config(config)
        partition(run, config.partition)
    curves = {name: trained(base, name, buffer, seed) for name, (buffer, seed) in ORDERS.items()}
    print(f"demo expert 0 ({len(curves['full'])} logged steps of {config.expert.batch_size}):")
    print("| order | shuffle_buffer | final loss | mean gap to full | largest gap to full |\n|---|---:|---:|---:|---:|")
    for name, (buffer, _) in ORDERS.items():
        mean, largest = gaps(curves[name], curves["full"]) if name != "full" else (0.0, 0.0)
        print(f"| {name} | {buffer:,} | {curves[name][-1]['loss']:.4f} | {mean:.4f} | {largest:.4f} |")


if __name__ == "__main__":
    main()
