"""Join cheaply, measured: the expert added for classes the others never saw (benchmarks/grow_model.py's 8+2
split), trained whole or as a LoRA of an old expert or of the seed, at ranks 4, 16 and 64.

The base run (the demo's config): classes 0-7 prepared, K=4 experts (k-means); a seed of --seed-steps steps on
those classes alone (`paris train-seed`, before the new data exists: no variant's start has seen classes 8-9);
then `paris add-expert --set data.classes=[8,9]` makes cluster 4, and one router is trained for the 5 experts
(a router never reads the experts, so every variant shares it). Each variant is a copy whose expert 4 is:
  full        a whole expert from random weights (grow_model's grown row)
  old-r{R}    `paris train-expert --expert 4 --init-from experts/0/final --lora R`
  seed-r{R}   `paris train-expert --expert 4 --init-from seed/final --lora R`
Per variant: FID and adherence of `paris evaluate --strategies top2`, adherence of top-2 on prompts of classes 8
and 9 alone, the parameters trained, the bytes published (experts/4/final) and the training wall time. Each
stage leaves a file under OUT/results, so the benchmark can be stopped and rerun to continue.

    .venv/bin/python benchmarks/lora.py --out runs/lora
    .venv/bin/python benchmarks/lora.py --out runs/lora-smoke --smoke     # minutes: tiny everything, to check it runs
    .venv/bin/python benchmarks/lora.py --out runs/lora --report-only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

from grow_model import NEW, OLD, evaluate, new_class_adherence, prepare_and_partition, stage
from quality_vs_compute import paris  # one paris command in its own process, one thread

RANKS = (4, 16, 64)
BASES = {"old": "experts/0/final", "seed": "seed/final"}


def variants() -> dict[str, list[str]]:
    """Variant name -> the options of its expert 4's `paris train-expert`."""
    lora = {f"{base}-r{rank}": ["--init-from", folder, "--lora", str(rank)]
            for base, folder in BASES.items() for rank in RANKS}
    return {"full": [], **lora}


def write_config(out: Path, data: str, smoke: bool) -> Path:
    from paris.config import to_yaml
    from paris.demo import demo_config

    config = demo_config(data)
    if smoke:  # seconds per stage: a check that every stage runs, not a measurement
        config = dataclasses.replace(
            config, data=dataclasses.replace(config.data, limit=2000, features="pixel-pca"),
            expert=dataclasses.replace(config.expert, steps=20, warmup_steps=0, checkpoint_every=10, log_every=5,
                                       preview_every=None),
            router=dataclasses.replace(config.router, steps=20, warmup_steps=0, checkpoint_every=10, log_every=5),
            sample=dataclasses.replace(config.sample, steps=4))
    path = out / "config.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(to_yaml(config))
    return path


def build_base(out: Path, config: Path, data: str, seed_steps: int) -> dict:
    """The grown run up to its new expert: old experts, the seed (old classes only), the added data, the router."""
    base, log = out / "base", out / "logs" / "base.log"
    prepare_and_partition(base, config, 4, log, "--set", f"data.classes={OLD}")
    for k in range(4):
        paris("train-expert", str(base), "--expert", str(k), log=log)  # a finished expert returns at once
    paris("train-seed", str(base), "--steps", str(seed_steps), log=log)
    if "added" not in json.loads((base / "data" / "manifest.json").read_text()):
        paris("add-expert", str(base), "--data", data, "--set", f"data.classes={NEW}", log=log)
    paris("train-router", str(base), log=log)
    return {}


def train_variant(out: Path, name: str, options: list[str]) -> dict:
    """A copy of the base run with its expert 4 trained as `options` say: what it trained and published, how long."""
    run = out / name
    if run.exists():  # a copy cut short: start the variant again
        shutil.rmtree(run)
    shutil.copytree(out / "base", run, ignore=shutil.ignore_patterns("eval"))
    started = time.perf_counter()
    paris("train-expert", str(run), "--expert", "4", *options, log=out / "logs" / f"{name}.log")
    seconds = time.perf_counter() - started
    final = run / "experts" / "4" / "final"
    return {"train_seconds": seconds, "published_bytes": sum(p.stat().st_size for p in final.iterdir()),
            "trained_parameters": trained_parameters(final)}


def trained_parameters(final: Path) -> int:
    """The parameters in what expert 4 published: its adapter, or its whole network."""
    from safetensors.torch import load_file

    adapter = final / "adapter_model.safetensors"
    weights = adapter if adapter.exists() else final / "diffusion_pytorch_model.safetensors"
    return sum(tensor.numel() for tensor in load_file(str(weights)).values())


def build(out: Path, data: str, num: int, seed_steps: int, smoke: bool) -> None:
    config = write_config(out, data, smoke)
    stage(out, "base-trained", lambda: build_base(out, config, data, seed_steps))
    for name, options in variants().items():
        stage(out, f"{name}-trained", lambda name=name, options=options: train_variant(out, name, options))
        stage(out, f"{name}-eval", lambda name=name: evaluate(out / name, "top2", num, out / "logs" / f"{name}.log"))
        stage(out, f"{name}-new-classes", lambda name=name: new_class_adherence(out / name, data))


def report(out: Path) -> str:
    results = {p.stem: json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))}
    lines = ["| expert 4 | FID top-2 | adherence top-2 (all ten) | adherence top-2 (new classes) | parameters trained "
             "| bytes published | training time |", "|---|---|---|---|---|---|---|"]
    for name in variants():
        trained, ev, new = (results.get(f"{name}-{part}") for part in ("trained", "eval", "new-classes"))
        if trained and ev and new:
            row = ev["strategies"]["top2"]
            lines.append(f"| {name} | {row['fid']:.2f} | {row['prompt_adherence']:.1%} | {new['top2']:.1%} | "
                         f"{trained['trained_parameters']:,} | {trained['published_bytes']:,} | "
                         f"{trained['train_seconds']:.0f} s |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/lora")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--num-samples", type=int, default=1000, help="images per FID row")
    parser.add_argument("--seed-steps", type=int, default=900, help="steps of the seed (at the monolith's batch)")
    parser.add_argument("--smoke", action="store_true", help="tiny data, steps and samples: checks that it runs")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    if not args.report_only:
        build(out, args.data, args.num_samples, args.seed_steps, args.smoke)
    print(report(out))


if __name__ == "__main__":
    main()
