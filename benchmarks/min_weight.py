"""What `sample.min_weight` buys: top-2 that skips an expert whose routed weight is below the threshold, on a
trained run (by default the demo's), in time and in quality.

Each threshold is one `paris evaluate` of the rows top1 and top2 (the evaluation's own sampler, references and
metric code, the run's sample settings but for min_weight), so top-2's time is a ratio to top-1's measured in
the same call. Threshold 0 runs twice, at --seed and --seed + 1: the FID of that pair is the spread of one row,
against which a threshold's change is judged. Results go to OUT/min_weight-<w>-seed<s>.json as each call
finishes, and a finished call is not run again (the benchmark resumes).

    .venv/bin/python benchmarks/min_weight.py --run runs/demo --out runs/min_weight --thresholds 0,0.05,0.2
"""

from __future__ import annotations

import argparse
import json
import os

from paris.config import EvalConfig
from paris.evaluate.table import evaluate_run

KEPT = ("fid", "prompt_adherence", "attribute_adherence", "seconds_per_image", "expert_passes_per_image_step")


def measured(run: str, out: str, threshold: float, seed: int, num_samples: int) -> dict:
    """The top1 and top2 rows of one evaluation at this threshold, read back if already measured."""
    path = os.path.join(out, f"min_weight-{threshold:g}-seed{seed}.json")
    if not os.path.exists(path):
        report = evaluate_run(run, EvalConfig(strategies="top1,top2", num_samples=num_samples, seed=seed),
                              min_weight=threshold)
        rows = {s: {key: row.get(key) for key in KEPT} for s, row in report["strategies"].items()}
        with open(path, "w") as file:
            json.dump(rows, file, indent=1)
    with open(path) as file:
        return json.load(file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/demo")
    parser.add_argument("--out", default="runs/min_weight")
    parser.add_argument("--thresholds", default="0,0.05,0.2", help="comma-separated min_weight values")
    parser.add_argument("--num-samples", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    calls = [(0.0, args.seed + 1)] + [(float(w), args.seed) for w in args.thresholds.split(",")]
    print(f"{'min_weight':>10} {'seed':>4} | {'top2 FID':>8} {'adher.':>6} {'passes':>6} {'s/img':>6} "
          f"{'x top1':>6} | {'top1 FID':>8} {'s/img':>6}")
    for threshold, seed in sorted(calls):
        rows = measured(args.run, args.out, threshold, seed, args.num_samples)
        top1, top2 = rows["top1"], rows["top2"]
        print(f"{threshold:>10g} {seed:>4} | {top2['fid']:>8.2f} {top2['prompt_adherence'] or 0:>6.3f} "
              f"{top2['expert_passes_per_image_step']:>6.3f} {top2['seconds_per_image']:>6.3f} "
              f"{top2['seconds_per_image'] / top1['seconds_per_image']:>6.2f} | {top1['fid']:>8.2f} "
              f"{top1['seconds_per_image']:>6.3f}", flush=True)


if __name__ == "__main__":
    main()
