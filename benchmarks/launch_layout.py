"""`paris launch --backend local` with no flag set, against the layouts a user could choose by hand: total
training samples per second of K=4 tiny experts on this machine's cores.

Layouts (C = the cores this process may use):
- default: no flag (C experts at a time, one thread each on a 2-core machine: cores / processes);
- one at a time: `--jobs 1`, each expert with every core;
- all at once: `--jobs 4`, one thread each (oversubscribed when C < 4);
- the old default: C at a time with OMP_NUM_THREADS=C exported, each process wanting every core.
Each layout trains the same 4 experts from scratch in its own copy of one prepared run; a layout's figure is
4 x steps x batch / wall seconds of `paris launch`, process start-up included, as the user waits for it.
Layouts run in turn, `--repeats` rounds, median per layout; the ratio printed is default / best other.

    .venv/bin/python benchmarks/launch_layout.py --out runs/launch_layout --steps 300 --repeats 1  # 12 min, 2 cores
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from paris import layout
from paris.clusters.partition import partition
from paris.config import PartitionConfig
from paris.data.prepare import prepare
from paris.demo import demo_config
from paris.launch.local import available_cores
from paris.run import RunDir


def layouts(cores: int) -> dict[str, tuple[list[str], dict]]:
    """name -> (extra `paris launch` arguments, extra environment)."""
    return {"default (no flag)": ([], {}),
            "one at a time (--jobs 1)": (["--jobs", "1"], {}),
            "all at once (--jobs 4)": (["--jobs", "4"], {}),
            f"old default (--jobs {cores}, OMP_NUM_THREADS={cores})": (["--jobs", str(cores)],
                                                                     {"OMP_NUM_THREADS": str(cores)})}


def prepared(out: Path, images: int) -> RunDir:
    """One run of `images` Fashion-MNIST images with the tiny presets, partitioned into 4 clusters."""
    base = RunDir(str(out / "base"))
    if not base.exists(layout.PARTITION_META):
        config = demo_config()
        # Pixel-PCA clusters: SimCLR's minutes of training per data size would measure nothing about launching.
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, limit=images, features="pixel-pca"))
        prepare(base, config)
        base.write_config(config)
        partition(base, PartitionConfig(num_clusters=4, seed=0))
    return base


def samples_per_second(base: RunDir, out: Path, name: str, arguments: list[str], env: dict, steps: int,
                       batch: int, limit: float) -> float | None:
    """4 x steps x batch / seconds of `paris launch` in a fresh copy of `base`; None past `limit` seconds."""
    run = out / "layout"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(base.url, run, ignore=shutil.ignore_patterns("experts", "logs"))
    environment = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # only the layout's own
    environment.update(HF_HUB_OFFLINE="1", **env)
    command = [sys.executable, "-m", "paris", "launch", str(run), "--backend", "local", "--out", str(run / "logs"),
               *arguments, "--set", f"expert.steps={steps}", "--set", f"expert.batch_size={batch}",
               "--set", f"expert.checkpoint_every={steps}", "--set", "expert.preview_every=1000000",
               "--set", "expert.threads=null"]
    start = time.perf_counter()
    # Its own process group, so that a layout past the time limit is stopped with the experts it started.
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return None
    seconds = time.perf_counter() - start
    if process.returncode:
        raise SystemExit(f"{name}: paris launch failed:\n{stderr[-2000:]}")
    return 4 * steps * batch / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/launch_layout")
    parser.add_argument("--steps", type=int, default=200, help="steps of each expert")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--images", type=int, default=4000, help="Fashion-MNIST images prepared")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--limit", type=float, default=300, help="seconds a layout may take before it is stopped")
    args = parser.parse_args()
    out = Path(args.out)
    base = prepared(out, args.images)
    cores = available_cores()
    figures = {name: [] for name in layouts(cores)}
    for _ in range(args.repeats):
        for name, (arguments, env) in layouts(cores).items():
            figure = samples_per_second(base, out, name, arguments, env, args.steps, args.batch, args.limit)
            # Stopped: fewer than all its samples in `limit` seconds, counted as that upper bound.
            figures[name].append(figure or 4 * args.steps * args.batch / args.limit)
            print(f"  {name}: " + (f"{figure:.0f} samples/s" if figure else f"stopped after {args.limit:.0f} s, "
                                    f"< {figures[name][-1]:.0f} samples/s"), flush=True)
    medians = {name: statistics.median(values) for name, values in figures.items()}
    print(f"K=4 tiny experts, {args.steps} steps of {args.batch} each, {cores} cores; median of {args.repeats}:")
    for name, value in medians.items():
        print(f"  {name:<45} {value:7.0f} samples/s")
    default = medians.pop("default (no flag)")
    best = max(medians, key=medians.get)
    print(f"default / best other layout ({best}): {default / medians[best]:.2f}x")


if __name__ == "__main__":
    main()
