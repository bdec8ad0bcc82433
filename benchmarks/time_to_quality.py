"""Time to quality on this machine: the demo's expert 0 trained through the demo's whole schedule, eagerly and
compiled, each alone on a core as `paris launch` and the demo run experts, with the loss each reached.

    .venv/bin/python benchmarks/time_to_quality.py                 # 3,600 steps of 16, as the demo
    .venv/bin/python benchmarks/time_to_quality.py --steps 1000    # shorter

Two `paris train-expert` processes run at once, one per core (taskset, one thread each), in two rounds:
  1. expert.compile=off beside expert.compile=on, with an empty compile cache: a fresh machine, where the compiled
     job pays a cold compile;
  2. off beside expert.compile=auto, with the cache round 1 left: any later expert of the same shape on the
     machine; auto decides from the compile time round 1 recorded (its reasoning is printed).
Seconds are wall seconds of the whole process: start-up, compile, every step and the final weights written. The
loss is the job's final training loss (the mean of its last 50 steps); eager and compiled follow the same
optimisation to float rounding, so equal losses say the time bought the same quality.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from paris.clusters.partition import partition
from paris.data.prepare import prepare
from paris.demo import demo_config
from paris.run import RunDir


def prepared_demo_data(out: Path) -> Path:
    """OUT/data: the demo's data set and K=4 partition, made once."""
    base = out / "data"
    run = RunDir(str(base))
    config = demo_config()
    if not run.exists("partition/meta.json"):
        prepare(run, config)
        partition(run, config.partition)
    return base


def job_folder(base: Path, name: str) -> Path:
    """A run of its own for one job (its experts/ folder), reading the shared data and partition."""
    folder = base.parent / name
    folder.mkdir(exist_ok=True)
    for part in ("data", "partition", "config.yaml"):
        if not (folder / part).exists():
            (folder / part).symlink_to((base / part).resolve())
    return folder


def start(folder: Path, mode: str, steps: int, core: int, cache: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_CACHE_DIR": cache, "HF_HUB_OFFLINE": "1"}
    command = ["taskset", "-c", str(core), sys.executable, "-m", "paris", "train-expert", str(folder), "--expert",
               "0", "--set", f"expert.steps={steps}", "--set", f"expert.compile={mode}", "--set",
               "expert.preview_every=null"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def run_round(base: Path, modes: list[str], steps: int, cache: str, tag: str) -> list[dict]:
    """The jobs of `modes` at once, job i on core i; per job its seconds, final loss and compile line."""
    folders = [job_folder(base, f"{tag}-{mode}") for mode in modes]
    started = time.time()  # a job's end: when its final manifest was written (the jobs end at different times)
    processes = [start(folder, mode, steps, core, cache) for core, (folder, mode) in enumerate(zip(folders, modes))]
    rows = []
    for folder, mode, process in zip(folders, modes, processes):
        log = process.communicate()[0]
        if process.returncode:
            sys.exit(f"{mode} job failed:\n{log[-2000:]}")
        manifest = RunDir(str(folder)).read_json("experts/0/final/manifest.json")
        ended = (folder / "experts/0/final/manifest.json").stat().st_mtime
        rows.append({"mode": mode, "seconds": ended - started,
                     "loss": manifest["final_loss"], "compile": " ".join(_compile_lines(log))})
    return rows


def _compile_lines(log: str) -> list[str]:
    return [re.sub(r"\s+", " ", line.split(": ", 1)[1]) for line in re.split(r"\n(?=expert 0: )", log)
            if line.startswith("expert 0: compil") or line.startswith("expert 0: not compil")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=demo_config().expert.steps, help="the job's steps (demo's)")
    parser.add_argument("--out", default="runs/time_to_quality", help="where the data and the jobs' runs go")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs two cores: the two jobs of a round run at once, one per core")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = prepared_demo_data(out)
    cache = tempfile.mkdtemp(prefix="inductor-", dir=out)
    print(f"expert 0 of the demo, {args.steps} steps of {demo_config().expert.batch_size}, one core each; "
          f"compile cache {cache}")
    print(f"{'round':<26} {'mode':<5} {'seconds':>8} {'x eager':>7} {'final loss':>10}  compile")
    for tag, modes, title in (("cold", ["off", "on"], "1: fresh machine"), ("warm", ["off", "auto"], "2: cache warm")):
        rows = run_round(base, modes, args.steps, cache, tag)
        for row in rows:
            print(f"{title:<26} {row['mode']:<5} {row['seconds']:8.1f} {rows[0]['seconds'] / row['seconds']:7.3f} "
                  f"{row['loss']:10.4f}  {row['compile'] or '-'}")


if __name__ == "__main__":
    main()
