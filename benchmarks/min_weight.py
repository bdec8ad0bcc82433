"""What `sample.min_weight` buys: top-2 that skips an expert whose routed weight is below the threshold, on a
trained run (by default the demo's), in time and in quality.

Each threshold is one `paris evaluate` of top2 (the evaluation's own sampler, references and metric code, the run's
sample settings but for min_weight); top1 comes once, beside threshold 0. Threshold 0 runs twice, at --seed and
--seed + 1: the FID of that pair is the spread of one row, against which a threshold's change is judged. Results go to OUT/min_weight-<w>-seed<s>.json as each call
finishes, and a finished call is not run again (the benchmark resumes).

Time is measured apart (--timing): one pipeline, its experts loaded first, then --rounds rounds that each sample
the same --timing images with top1 and with top2 at every threshold in turn, so a slower spell of a shared
machine falls on every row alike; the median of the rounds is reported.

    .venv/bin/python benchmarks/min_weight.py --run runs/demo --out runs/min_weight --thresholds 0,0.05,0.2
    .venv/bin/python benchmarks/min_weight.py --run runs/demo --thresholds 0,0.05,0.2 --timing 50 --rounds 3
    .venv/bin/python benchmarks/min_weight.py --run runs/demo --thresholds 0,0.05 --timing 50 --router text
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time

from paris.config import EvalConfig
from paris.demo import demo_prompts
from paris.evaluate.table import evaluate_run
from paris.inference.pipeline import ParisPipeline
from paris.run import RunDir

KEPT = ("fid", "prompt_adherence", "attribute_adherence", "seconds_per_image", "expert_passes_per_image_step")


def measured(run: str, out: str, threshold: float, seed: int, num_samples: int, strategies: str) -> dict:
    """The rows of one evaluation at this threshold, read back if already measured."""
    path = os.path.join(out, f"min_weight-{threshold:g}-seed{seed}.json")
    if not os.path.exists(path):
        report = evaluate_run(run, EvalConfig(strategies=strategies, num_samples=num_samples, seed=seed),
                              min_weight=threshold)
        rows = {s: {key: row.get(key) for key in KEPT} for s, row in report["strategies"].items()}
        with open(path, "w") as file:
            json.dump(rows, file, indent=1)
    with open(path) as file:
        return json.load(file)


def timed(run: str, thresholds: list[float], num_images: int, rounds: int, router: str = "") -> dict:
    """{row: (median seconds per image, expert passes per image and step)} for top1 and top2 at each threshold,
    routed by RUN/router-<router>/ if named (e.g. DDM's, which reads the prompt), else RUN/router/."""
    pipe = ParisPipeline.from_run(run, router=router)
    prompts, _ = demo_prompts(RunDir(run).read_config(), -(-num_images // 10))
    rows = {"top1": dataclasses.replace(pipe.sample, strategy="top1")}
    rows.update({f"top2 min_weight {w:g}": dataclasses.replace(pipe.sample, strategy="top2", min_weight=w)
                 for w in thresholds})
    pipe.generate(prompts[:2], rows["top1"].updated(strategy="full", steps=1))  # loads every expert
    seconds, passes = {row: [] for row in rows}, {}
    for _ in range(rounds):
        for row, sample in rows.items():
            start = time.perf_counter()
            _, stats = pipe.generate(prompts[:num_images], sample)
            seconds[row].append((time.perf_counter() - start) / num_images)
            passes[row] = stats["expert_passes_per_image"]
    return {row: (statistics.median(seconds[row]), passes[row]) for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/demo")
    parser.add_argument("--out", default="runs/min_weight")
    parser.add_argument("--thresholds", default="0,0.05,0.2", help="comma-separated min_weight values")
    parser.add_argument("--num-samples", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timing", type=int, default=0, help="images per timed call; 0: measure quality instead")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--router", default="", help="with --timing: route with RUN/router-NAME (default RUN/router)")
    args = parser.parse_args()
    if args.timing:
        rows = timed(args.run, [float(w) for w in args.thresholds.split(",")], args.timing, args.rounds, args.router)
        print(f"{'row':>22} | {'s/img':>6} {'x top1':>6} {'passes':>6}")
        for row, (seconds, passes) in rows.items():
            print(f"{row:>22} | {seconds:>6.3f} {seconds / rows['top1'][0]:>6.2f} {passes:>6.3f}")
        return
    os.makedirs(args.out, exist_ok=True)
    # top1 once, beside top2 at threshold 0 (min_weight changes nothing for it): the baseline row
    calls = [(0.0, args.seed, "top1,top2"), (0.0, args.seed + 1, "top2")]
    calls += [(float(w), args.seed, "top2") for w in args.thresholds.split(",") if float(w) > 0]
    print(f"{'row':>22} {'seed':>4} | {'FID':>7} {'adher.':>6} {'passes':>6}")
    for threshold, seed, strategies in calls:
        rows = measured(args.run, args.out, threshold, seed, args.num_samples, strategies)
        for strategy, row in rows.items():
            name = strategy if strategy == "top1" else f"{strategy} min_weight {threshold:g}"
            print(f"{name:>22} {seed:>4} | {row['fid']:>7.2f} {row['prompt_adherence'] or 0:>6.3f} "
                  f"{row['expert_passes_per_image_step']:>6.3f}", flush=True)


if __name__ == "__main__":
    main()
