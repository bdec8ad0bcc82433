"""The mixture distilled into one student (`paris distill`), against its teacher and against the monolith, on a
copy of the demo's run: FID, prompt adherence, passes per image and step, and the student's training samples
beside the experts'. Students: teacher oracle and top-2, each from the data and from the experts' samples alone,
and top-2 with guidance distilled.

Every stage resumes: the copy of the run, the monolith (`paris train-monolith`, if the run has none), each
expert's published samples (`paris sample-expert`), each student (a training job: it resumes from its
checkpoint), and each row of the table (one `paris evaluate` of one strategy, kept in OUT/rows/<row>.json).
The students take a third of the experts' training samples (DDM's budget) in the monolith's recipe.

    nice -n 10 .venv/bin/python benchmarks/distill.py --demo runs/demo --out runs/distill
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil

from paris import layout
from paris.config import EvalConfig, RunConfig
from paris.evaluate.table import evaluate_run
from paris.run import RunDir
from paris.train.distill import distill
from paris.train.expert import train_monolith
from paris.train.expert_samples import published, sample_expert

# row -> (teacher, source, guidance distilled); the student's folder is student-<row>
STUDENTS = {"oracle": ("oracle", "data", False), "top2": ("top2", "data", False),
            "oracle_samples": ("oracle", "expert-samples", False), "top2_samples": ("top2", "expert-samples", False),
            "top2_guided": ("top2", "data", True)}
KEPT = ("fid", "prompt_adherence", "attribute_adherence", "expert_passes_per_image_step",
        "forward_passes_per_image_step", "seconds_per_image")


def student_config(config: RunConfig, teacher: str, source: str, guided: bool, share: float) -> RunConfig:
    """The monolith's recipe (batch and lr of the demo's --full) for `share` of the experts' training samples."""
    e = config.expert
    batch = config.partition.num_clusters * e.batch_size
    steps = round(share * config.partition.num_clusters * e.steps * e.batch_size / batch)
    return dataclasses.replace(config, distill=dataclasses.replace(
        config.distill, teacher=teacher, source=source, guidance_distill=guided, steps=steps, batch_size=batch,
        lr=e.lr, warmup_steps=e.warmup_steps, cooldown=e.cooldown, ema_decay=e.ema_decay, checkpoint_every=200,
        log_every=50, threads=None, guidance_range=[1.0, 8.0]))


def prepare_run(demo: str, out: str) -> RunDir:
    """A copy of the demo's data, partition, experts and routers (its own checkpoints, samples and eval left)."""
    path = os.path.join(out, "run")
    if not os.path.exists(os.path.join(path, "router", "final", "config.json")):
        shutil.copytree(demo, path, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("ckpt", "previews", "eval", "samples", "logs", "tensorboard"))
    return RunDir(path)


def train_stages(run: RunDir, samples_per_expert: int, share: float) -> None:
    config = run.read_config()
    if not run.exists(f"{layout.final(layout.MONOLITH)}/config.json"):  # as the demo's --full trains it
        train_monolith(run, dataclasses.replace(config, expert=dataclasses.replace(config.expert, threads=None)))
    for k in range(config.partition.num_clusters):
        if published(run, k) < samples_per_expert:
            sample_expert(run, config, k, samples_per_expert)
    for row, (teacher, source, guided) in STUDENTS.items():
        if not run.exists(f"{layout.final(layout.student(row))}/config.json"):
            distill(run, student_config(config, teacher, source, guided, share), name=row)


def evaluated(run: RunDir, out: str, strategy: str, num_samples: int) -> dict:
    """One row of the table, read back if measured already."""
    path = os.path.join(out, "rows", f"{strategy.replace('@', '-')}.json")
    if not os.path.exists(path):
        report = evaluate_run(run.url, EvalConfig(strategies=strategy, num_samples=num_samples))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as file:
            json.dump({key: report["strategies"][strategy].get(key) for key in KEPT}, file, indent=1)
    with open(path) as file:
        return json.load(file)


def table(run: RunDir, rows: dict[str, dict]) -> str:
    experts = sum(run.read_json(f"{layout.final(layout.expert(k))}/manifest.json")["samples_seen"]
                  for k in range(run.read_config().partition.num_clusters))
    teacher, monolith = rows["top2"]["fid"], rows["monolith"]["fid"]
    lines = [f"experts' training samples: {experts:,}; guidance {run.read_config().sample.guidance:g}", "",
             "| row | FID | x teacher top-2 | x monolith | adherence | expert passes / image / step | "
             "network passes / image / step | training samples | x experts' |", "|---" * 9 + "|"]
    for name, row in rows.items():
        folder = layout.student(name.partition("@")[2]) if name.startswith("student") else None
        samples = run.read_json(f"{layout.final(folder)}/manifest.json")["samples_seen"] if folder else None
        lines.append(f"| {LABELS[name]} | {row['fid']:.2f} | {row['fid'] / teacher:.3f} | {row['fid'] / monolith:.3f} | "
                     f"{row['prompt_adherence']:.1%} | {row['expert_passes_per_image_step']:.2f} | "
                     f"{row['forward_passes_per_image_step']:.2f} | "
                     + (f"{samples:,} | {samples / experts:.2f} |" if samples else "| |"))
    return "\n".join(lines)


# how the README and the plot name each row
LABELS = {"top2": "teacher: the mixture, top-2", "monolith": "one model (monolith)",
          "student@oracle": "student of oracle, from the data", "student@top2": "student of top-2, from the data",
          "student@oracle_samples": "student of oracle, from expert samples",
          "student@top2_samples": "student of top-2, from expert samples",
          "student@top2_guided": "student of top-2, guidance distilled"}


def plot(rows: dict[str, dict], path: str) -> None:
    """FID against the network passes each image takes per step: the price of each row's quality."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, (name, row) in enumerate(rows.items()):
        ax.scatter(row["forward_passes_per_image_step"], row["fid"], color=plt.get_cmap("tab10")(i), s=40,
                   marker="s" if name == "top2" else "D" if name == "monolith" else "o", label=LABELS[name])
    ax.set_xlabel("network passes per image and step (guidance included)")
    ax.set_ylabel("FID (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the points, never over them
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default="runs/demo", help="the trained demo run (copied, never written)")
    parser.add_argument("--out", default="runs/distill")
    parser.add_argument("--samples-per-expert", type=int, default=1000, help="images each expert publishes")
    parser.add_argument("--share", type=float, default=1 / 3, help="the students' training samples / the experts'")
    parser.add_argument("--num-samples", type=int, default=1000, help="images per row for FID (the demo's --full)")
    args = parser.parse_args()
    run = prepare_run(args.demo, args.out)
    train_stages(run, args.samples_per_expert, args.share)
    strategies = ["top2", "monolith", *(f"student@{row}" for row in STUDENTS)]
    rows = {s: evaluated(run, args.out, s, args.num_samples) for s in strategies}
    report = table(run, rows)
    with open(os.path.join(args.out, "distill.md"), "w") as file:
        file.write(report + "\n")
    plot(rows, os.path.join(args.out, "distill.png"))
    print(report)


if __name__ == "__main__":
    main()
