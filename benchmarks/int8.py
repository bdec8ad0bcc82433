"""Int8 experts against fp32 (`sample.quantize`, paris.models.quantize): what they cost in quality, time and memory.

(b) On a trained run (the demo's, `--demo`): FID, prompt adherence, seconds per image and the experts' resident
bytes, one `paris evaluate` of top-2 per row (the same sampler, steps, noise, references and metric code; only
quantize changes), and fp32 once more at --seed + 1: the spread of one row, against which int8's change is judged.
The run is evaluated through OUT/run, a folder of links to its parts, so its own eval/ is left as it is. Rows go
to OUT/rows/<row>.json as they finish, and a finished row is not measured again (the benchmark resumes).

(c) The resident bytes of K=8 DiT-XL/2 experts (the paper's preset) under top-2 with a cap of 2 resident, fp32 /
bf16 / int8. fp32 and bf16 need no weights: the whole expert is built on the meta device. int8 needs real weights
to quantise, so a 1-block and a 2-block expert of XL/2's widths are built on the CPU with random weights: their
difference is one block, and an expert is the 1-block one plus 27 more blocks (the same sum gives fp32 exactly,
which the output checks).

Speed (--speed PRESET): the seconds of one guided forward pass of one random expert of that preset on this
machine's CPU, per quantize, the median of --rounds, one thread (as the tests and a shared machine run): which
quantize is faster depends on the expert's size (int8-dynamic's int8 matmuls pay only on large ones).

    nice -n 10 .venv/bin/python benchmarks/int8.py --demo runs/demo --out runs/int8 --num-samples 200
    .venv/bin/python benchmarks/int8.py --xl-only
    .venv/bin/python benchmarks/int8.py --xl-only --speed B/2 --batch 2
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import statistics
import time

import torch

from paris.config import DIT_PRESETS, ROUTER_PRESETS, EvalConfig
from paris.evaluate.table import evaluate_run
from paris.models.dit import DiT
from paris.models.quantize import quantized
from paris.models.resident import resident_bytes
from paris.models.router import Router

ROWS = {"fp32": ("none", 0), "int8": ("int8", 0), "int8-dynamic": ("int8-dynamic", 0), "fp32, seed + 1": ("none", 1)}
KEPT = ("fid", "prompt_adherence", "attribute_adherence", "seconds_per_image", "resident_expert_bytes")
EXPERTS, RESIDENT = 8, 2  # K of the paper, and the cap that top-2 needs


def linked_run(demo: str, out: str) -> str:
    """OUT/run: links to every part of the run at `demo` but its eval/, which the evaluations write their own of."""
    path = os.path.join(out, "run")
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(demo):
        if name != "eval" and not os.path.lexists(os.path.join(path, name)):
            os.symlink(os.path.abspath(os.path.join(demo, name)), os.path.join(path, name))
    return path


def measured(run: str, out: str, row: str, num_samples: int, seed: int) -> dict:
    """One row of (b): top-2 evaluated with the row's quantize and seed, read back if measured already."""
    path = os.path.join(out, "rows", f"{row.replace(', ', '-').replace(' ', '')}.json")
    if not os.path.exists(path):
        quantize, seed_offset = ROWS[row]
        report = evaluate_run(run, EvalConfig(strategies="top2", num_samples=num_samples, seed=seed + seed_offset),
                              quantize=quantize)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as file:
            json.dump({key: report["strategies"]["top2"].get(key) for key in KEPT}, file, indent=1)
    with open(path) as file:
        return json.load(file)


def xl_expert_bytes() -> dict[str, int]:
    """The resident bytes of one DiT-XL/2 expert as fp32, bf16 and int8 (see the module's docstring)."""
    xl = DIT_PRESETS["XL/2"]
    with torch.device("meta"):
        whole = DiT(xl)
    torch.manual_seed(0)
    one, two = (DiT(dataclasses.replace(xl, depth=depth)) for depth in (1, 2))
    scaled = lambda small, large: small + (xl.depth - 1) * (large - small)  # noqa: E731
    fp32 = scaled(resident_bytes(one), resident_bytes(two))
    if fp32 != resident_bytes(whole):
        raise AssertionError(f"one block scaled to XL/2 holds {fp32} bytes, the whole expert {resident_bytes(whole)}")
    int8 = scaled(resident_bytes(quantized(one, "int8")), resident_bytes(quantized(two, "int8")))
    return {"fp32": fp32, "bf16": resident_bytes(whole.to(torch.bfloat16)), "int8": int8}


def router_bytes() -> int:
    """The B/2 router's bytes (fp32: it is not quantised), built on the meta device."""
    with torch.device("meta"):
        return resident_bytes(Router(ROUTER_PRESETS["B/2"]))


def forward_seconds(preset: str, batch: int, rounds: int) -> dict[str, float]:
    """Median seconds of a guided pass (2 x `batch` rows) of one random `preset` expert, per quantize."""
    torch.set_num_threads(1)
    config = DIT_PRESETS[preset]
    torch.manual_seed(0)
    trained = DiT(config).eval()
    x = torch.randn(2 * batch, config.in_channels, config.input_size, config.input_size)
    t, text = torch.rand(2 * batch), torch.randn(2 * batch, 77, config.text_dim)
    seconds = {}
    for quantize in ("none", "int8", "int8-dynamic"):
        model = quantized(copy.deepcopy(trained), quantize)
        with torch.no_grad():
            model(x, t, text)  # the first call sets up kernels: not timed
            times = []
            for _ in range(rounds):
                start = time.perf_counter()
                model(x, t, text)
                times.append(time.perf_counter() - start)
        seconds[quantize] = statistics.median(times)
    return seconds


def print_xl_table() -> None:
    per_expert = xl_expert_bytes()
    gib = lambda n: f"{n / 2**30:.2f} GiB"  # noqa: E731
    print(f"(c) K={EXPERTS} DiT-XL/2 experts, top-2 with at most {RESIDENT} resident (int8: one XL/2 block "
          f"quantised on the CPU and scaled to 28 blocks; fp32 and bf16: the whole expert on the meta device)")
    print(f"| experts | one expert | {RESIDENT} resident (cap) | all {EXPERTS} resident | x fp32 |")
    print("|---|---|---|---|---|")
    for name, size in per_expert.items():
        print(f"| {name} | {gib(size)} | {gib(RESIDENT * size)} | {gib(EXPERTS * size)} | "
              f"{size / per_expert['fp32']:.3f} |")
    print(f"router B/2 (fp32, never quantised, always resident): {gib(router_bytes())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", default="runs/demo", help="a trained run (`paris demo` makes one)")
    parser.add_argument("--out", default="runs/int8")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--xl-only", action="store_true", help="only (c): the XL/2 bytes, no run needed")
    parser.add_argument("--speed", help="also time one expert of this preset per quantize (B/2, tiny, ...)")
    parser.add_argument("--batch", type=int, default=2, help="with --speed: images per guided pass")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(format="%(asctime)s %(message)s")
    logging.getLogger("paris").setLevel(logging.INFO)  # evaluate's progress lines, to stderr
    print_xl_table()
    if args.speed:
        seconds = forward_seconds(args.speed, args.batch, args.rounds)
        print(f"\nspeed: one {args.speed} expert, a guided pass of {args.batch} images, 1 CPU thread")
        print(" | ".join(f"{q}: {s:.3f} s ({seconds['none'] / s:.2f}x fp32)" for q, s in seconds.items()))
    if args.xl_only:
        return
    run = linked_run(args.demo, args.out)
    print(f"\n(b) top-2 on {args.demo}, {args.num_samples} images per row")
    print("| row | FID | prompt adherence | s / image | experts resident (MiB) |")
    print("|---|---|---|---|---|")
    for row in ROWS:
        r = measured(run, args.out, row, args.num_samples, args.seed)
        print(f"| {row} | {r['fid']:.2f} | {r['prompt_adherence'] or 0:.1%} | {r['seconds_per_image']:.3f} | "
              f"{r['resident_expert_bytes'] / 2**20:.2f} |", flush=True)


if __name__ == "__main__":
    main()
