"""Decentralized experts against one model at matched compute, on Fashion-MNIST, at several budgets.

Each row is a system trained from scratch in its own run directory under OUT/runs/ and evaluated with
`paris evaluate` (the same sampler, steps, reference images and FID code for every row):
  monolith rows   one model on all the data (`paris train-monolith`), at a given batch
  mixture rows    K experts (`paris train-expert`, each its own process) + a router, scored as top1/top2/full
The rows and their budgets are in quality_systems.py (1x = 460,800 training samples; the demo trains 0.5x); the
router's training cost is reported beside each mixture (DDM: about 4%). Every stage is a file under OUT, so the
sweep can be stopped at any point and rerun to continue; two jobs run at once (one per core). OUT/table.md,
table.json and fid_vs_compute.png always cover every row evaluated under OUT, whatever rows this call ran.

    .venv/bin/python benchmarks/quality_vs_compute.py --out runs/quality                 # the whole sweep
    .venv/bin/python benchmarks/quality_vs_compute.py --rows core --budgets 1 --num-samples 1000
    .venv/bin/python benchmarks/quality_vs_compute.py --report-only                      # table + plot of what is done
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from quality_systems import System, k8_rows, rows

from paris import layout
from paris.config import apply_overrides
from paris.run import RunDir

TINY_PRESETS = "--set expert.preset=tiny --set router.preset=tiny"
TEXT_ROUTER = "text"  # the name of DDM's router where a row trains both


def paris(*args: str, log: Path) -> None:
    """One paris command in its own process, one thread (two run at once on two cores)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"$ paris {' '.join(args)}\n")
        f.flush()
        code = subprocess.call([sys.executable, "-m", "paris", *args], stdout=f, stderr=subprocess.STDOUT, env=env)
    if code:
        raise RuntimeError(f"paris {' '.join(args)} failed (exit {code}); see {log}")


def prepared_data(out: Path, features: str, captions: str, data: str) -> Path:
    """One prepared copy of Fashion-MNIST per kind of clustering feature and of captions, shared (hard-linked) by
    the rows."""
    name = features if captions == "class" else f"{features}-{captions}"
    base = out / "data" / name
    if not (base / "data" / "manifest.json").exists():
        paris("prepare", str(base), "--data", data, "--set", f"data.features={'pixel-pca' if features == 'labels' else features}",
              "--set", f"data.captions={captions}", *TINY_PRESETS.split(), log=out / "logs" / f"prepare-{name}.log")
    return base


def setup(out: Path, system: System, data: str) -> Path:
    """The row's run directory: the shared data, its config, its partition."""
    run = out / "runs" / system.name
    if (run / "partition" / "meta.json").exists():
        return run
    base = prepared_data(out, system.features, system.captions, data)
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(base / "data", run / "data", copy_function=os.link)
    shutil.copy(base / "config.yaml", run / "config.yaml")
    s = system.schedule()
    k = s.get("clusters", 4)
    method = "labels" if system.features == "labels" else "kmeans"
    overrides = [f"expert.steps={s['expert_steps']}", f"expert.batch_size={s['expert_batch']}",
                 f"expert.lr={system.lr}", "expert.warmup_steps=100", "expert.ema_decay=0.999", "expert.log_every=100",
                 "expert.threads=1",
                 f"expert.checkpoint_every={max(100, s['expert_steps'] // 10)}", "router.epochs=1.0",
                 "router.batch_size=128", "router.lr=0.0005", "router.warmup_steps=50", "router.ema_decay=0.999",
                 "router.threads=1", f"router.use_text={str(system.text_router).lower()}", "sample.guidance=4.0",
                 f"baseline.protocol={system.protocol}", f"baseline.batch_size={s.get('monolith_batch', 'null')}",
                 f"expert.steps_by_size={str(system.by_size).lower()}", f"expert.preset={system.preset}",
                 f"expert.cooldown={system.cooldown}"]
    if s["seed_steps"]:
        overrides += ["expert.init_from=seed/final"]
    run_dir = RunDir(str(run))  # the row's recipe in its config, where every later command reads it
    run_dir.write_config(apply_overrides(run_dir.read_config(), overrides))
    paris("partition", str(run), "--clusters", str(k), "--method", method, log=run / "logs" / "partition.log")
    return run


def train_jobs(system: System) -> list[tuple[str, list[str]]]:
    """(folder it writes, paris arguments) of each training job of a row, in order: seed, experts, router."""
    s = system.schedule()
    if system.kind == "monolith":
        return [("monolith", ["train-monolith"])]
    jobs = [("seed", ["train-seed", "--steps", str(s["seed_steps"])])] if s["seed_steps"] else []
    jobs += [(f"experts/{k}", ["train-expert", "--expert", str(k)]) for k in range(s["clusters"])]
    jobs += [("router", ["train-router"])]
    if system.both_routers:  # DDM's, which reads the prompt, beside Paris's: the same experts
        jobs += [(layout.router(TEXT_ROUTER), ["train-router", "--name", TEXT_ROUTER, "--set", "router.use_text=true"])]
    return jobs


def row_strategies(system: System, mixture_strategies: str) -> str:
    """The strategies a row is scored with: the monolith's, or the mixture's with each of its routers."""
    if system.kind == "monolith":
        return "monolith"
    rules = mixture_strategies.split(",")
    return ",".join(rules + [f"{rule}@{TEXT_ROUTER}" for rule in rules if system.both_routers])


def evaluate(out: Path, run: Path, system: System, num_samples: int, guidance: float, strategies: str,
             seed: int = 0) -> dict:
    """`paris evaluate` of a row with the named strategies, cached under OUT/results."""
    tag = f"__{strategies.replace(',', '-')}__seed{seed}" if seed else ""
    cache = out / "results" / f"{system.name}__n{num_samples}__g{guidance}{tag}.json"
    if not cache.exists():
        paris("evaluate", str(run), "--strategies", strategies, "--num-samples", str(num_samples),
              "--guidance", str(guidance), "--seed", str(seed), log=run / "logs" / "evaluate.log")
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(run / "eval" / "report.json", cache)
    return json.loads(cache.read_text())


def chosen_guidance(out: Path, run: Path, system: System, grid: list[float], samples: int, compute: bool = True):
    """The guidance scale of the grid with the best FID for the row's main strategy (top2; the monolith), on
    `samples` images drawn with another seed than the final evaluation's, as papers choose it. Without
    `compute`, only from evaluations already made (None if one is missing)."""
    if len(grid) == 1:
        return grid[0]
    main = "monolith" if system.kind == "monolith" else "top2"
    fids = {}
    for g in grid:
        cache = out / "results" / f"{system.name}__n{samples}__g{g}__{main}__seed1.json"
        if not compute and not cache.exists():
            return None
        fids[g] = evaluate(out, run, system, samples, g, main, seed=1)["strategies"][main]["fid"]
    return min(fids, key=fids.get)


def run_row(out: Path, system: System, data: str, num_samples: int, grid: list[float], select_samples: int,
            mixture_strategies: str) -> None:
    """Train a row's jobs one after the other (each resumes from its checkpoints), then evaluate it."""
    run = setup(out, system, data)
    for folder, (command, *options) in train_jobs(system):
        if not (run / folder / "final" / "config.json").exists():
            paris(command, str(run), *options, log=run / "logs" / f"{folder.replace('/', '-')}.log")
    evaluate(out, run, system, num_samples, chosen_guidance(out, run, system, grid, select_samples),
             row_strategies(system, mixture_strategies))


def run_sweep(out: Path, systems: list[System], data: str, num_samples: int, grid: list[float],
              select_samples: int, mixture_strategies: str) -> None:
    """Data first (shared), then the rows two at a time: one process per core."""
    for features, captions in sorted({(s.features, s.captions) for s in systems}):
        prepared_data(out, features, captions, data)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda s: run_row(out, s, data, num_samples, grid, select_samples, mixture_strategies), systems))


def flops_per_sample(run: Path, router: str = layout.ROUTER) -> dict[str, float]:
    """Training FLOPs per sample (forward x 3) of the run's expert and router (job folder `router`) networks,
    counted by torch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from paris.models.io import load_pretrained
    from paris.run import RunDir

    run_dir = RunDir(str(run))
    tokens = run_dir.read_config().data.max_tokens
    counts = {}
    for name, folder in (("expert", "experts/0/final"), ("router", f"{router}/final")):
        model = load_pretrained(run_dir, folder)
        c = model.architecture
        x, t = torch.zeros(1, c.in_channels, c.input_size, c.input_size), torch.full((1,), 0.5)
        text = {"text": torch.zeros(1, tokens, c.text_dim), "text_mask": torch.ones(1, tokens, dtype=torch.bool)}
        text = text if c.text_dim else {}  # Paris's router sees no text
        with FlopCounterMode(display=False) as counter:
            model(x, t, **text)
        counts[name] = 3.0 * counter.get_total_flops()
    return counts


def final_loss(run: Path, system: System) -> float:
    """The flow models' final training loss (the mean of their last logged steps); a mixture's weighted by the
    share of the data each expert holds, the loss of the whole data set under the mixture with a perfect router."""
    if system.kind == "monolith":
        return json.loads((run / "monolith" / "final" / "manifest.json").read_text())["final_loss"]
    sizes = json.loads((run / "partition" / "meta.json").read_text())["sizes"]
    losses = [json.loads((run / "experts" / str(k) / "final" / "manifest.json").read_text())["final_loss"]
              for k in range(len(sizes))]
    return sum(n * loss for n, loss in zip(sizes, losses)) / sum(sizes)


HELD_OUT_KEYS = ("held_out_loss", "held_out_loss_by_t")


def held_out(out: Path, run: Path, system: System, report: dict, num_samples: int) -> dict[str, dict]:
    """Per strategy of `report` (the row's `paris evaluate` report), its held-out loss and its value per t
    (paris.evaluate.heldout): from the report where it has them, else computed here as `paris evaluate` computes
    them (same images, seed and batches) and cached, so rows evaluated before the measure existed get it without
    sampling again. Guidance plays no part in them."""
    cache = out / "results" / f"{system.name}__n{num_samples}__heldout.json"
    found = json.loads(cache.read_text()) if cache.exists() else {}
    found |= {s: {key: row[key] for key in HELD_OUT_KEYS} for s, row in report["strategies"].items()
              if HELD_OUT_KEYS[0] in row}
    missing = [s for s in report["strategies"] if s not in found]
    if missing:
        import torch

        from paris.config import EvalConfig
        from paris.evaluate.heldout import held_out_loss
        from paris.evaluate.reference import load_reference
        from paris.evaluate.table import router_name, routing_rule, single_model
        from paris.inference.pipeline import ParisPipeline

        torch.set_num_threads(1)  # beside a training job on the other core
        evaluation = EvalConfig(num_samples=num_samples)
        real = load_reference(RunDir(str(run)).read_config(), num_samples)
        for strategy in missing:
            pipe = ParisPipeline.from_run(str(run), model=single_model(strategy), router=router_name(strategy))
            found[strategy] = held_out_loss(pipe.mixture, routing_rule(strategy), real.images, real.prompts,
                                            evaluation.seed, evaluation.batch_size)
        cache.write_text(json.dumps(found))
    return found


def router_cost(run: Path, system: System, name: str) -> tuple[float, float]:
    """The mean accuracy of the row's router `name` (layout.router), and its share of the row's training FLOPs."""
    folder = run / layout.router(name)
    flops = flops_per_sample(run, folder.name)
    router_samples = json.loads((folder / "final" / "manifest.json").read_text())["samples_seen"]
    share = router_samples * flops["router"] / (router_samples * flops["router"] + system.samples * flops["expert"])
    return json.loads((folder / "accuracy.json").read_text())["mean"], share


def table(out: Path, systems: list[System], num_samples: int, grid: list[float], select_samples: int) -> list[dict]:
    """One line per (system, strategy) that has been evaluated."""
    from paris.evaluate.table import router_name
    lines = []
    for s in systems:
        run = out / "runs" / s.name
        guidance = chosen_guidance(out, run, s, grid, select_samples, compute=False)
        cache = out / "results" / f"{s.name}__n{num_samples}__g{guidance}.json"
        if not cache.exists():
            continue
        report = json.loads(cache.read_text())
        loss = final_loss(run, s)
        held_out_losses = held_out(out, run, s, report, num_samples)
        # Each router's FLOPs are counted once per row, not once per strategy that samples with it.
        costs = {name: router_cost(run, s, name) for name in {router_name(st) for st in report["strategies"]}
                 if s.kind == "mixture"}
        for strategy, row in report["strategies"].items():
            router, router_share = costs.get(router_name(strategy), (None, None))
            lines.append({"system": s.name, "strategy": strategy, "budget": s.budget, "samples": s.samples,
                          "fid": row["fid"], "adherence": row.get("prompt_adherence"), "router_accuracy": router,
                          "attribute_adherence": row.get("attribute_adherence"),
                          "adherence_by_class": row.get("prompt_adherence_by_class"), "loss": loss,
                          **held_out_losses[strategy],
                          "router_share": router_share,
                          "seconds_per_image": row["seconds_per_image"], "guidance": guidance,
                          **dataclasses.asdict(s)})
    return lines


def markdown(lines: list[dict]) -> str:
    from paris.evaluate.table import by_class_table  # loads the pipeline's modules: only when a table is written

    head = ("| system | strategy | training samples | FID | adherence | attribute adherence | final training loss "
            "| held-out loss | router accuracy | router's share of training |\n" + "|---" * 10 + "|\n")
    attributes = lambda l: "–" if l.get("attribute_adherence") is None else f"{l['attribute_adherence']:.1%}"  # noqa: E731
    text = head + "".join(
        f"| {l['system']} | {l['strategy']} | {l['samples']:,} | {l['fid']:.2f} | {l['adherence']:.1%} | "
        f"{attributes(l)} | {l['loss']:.4f} | "
        f"{l['held_out_loss']:.4f} | "
        + (f"{l['router_accuracy']:.1%} | {l['router_share']:.1%}" if l["router_accuracy"] is not None else " | ")
        + " |\n" for l in lines)
    # Evaluations made since paris evaluate reports it.
    by_class = {f"{l['system']}, {l['strategy']}": l["adherence_by_class"] for l in lines if l["adherence_by_class"]}
    if by_class:
        text += "\n" + "\n".join(by_class_table(by_class)) + "\n"
    if lines:  # where in t each system denoises held-out images better or worse
        times = list(lines[0]["held_out_loss_by_t"])
        text += "\n| held-out loss at t | " + " | ".join(times) + " |\n" + "|---" * (len(times) + 1) + "|\n"
        text += "".join(f"| {l['system']}, {l['strategy']} | " + " | ".join(
            f"{l['held_out_loss_by_t'][t]:.4f}" for t in times) + " |\n" for l in lines)
    return text


def plot(lines: list[dict], path: Path) -> None:
    """FID (left) and held-out loss (right) against training samples: one line per recipe across budgets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    series: dict[str, list] = {}
    for l in lines:
        # One model size (other presets are a separate comparison, in the table) and the paper's top-2 rule.
        if l["preset"] == "tiny" and l["strategy"] in ("monolith", "top2", f"top2@{TEXT_ROUTER}"):
            system = System(**{field.name: l[field.name] for field in dataclasses.fields(System)})
            series.setdefault(system.label(l["strategy"]), []).append(l)
    colours = plt.get_cmap("tab10")
    scales = {l["guidance"] for l in lines}
    axes[0].set_title(f"sampled images, guidance {scales.pop():g}" if len(scales) == 1 else
                      "sampled images, guidance chosen per row", fontsize=10)
    axes[1].set_title("the training objective on the test images (no sampling)", fontsize=10)
    for ax, key, label in [(axes[0], "fid", "FID"), (axes[1], "held_out_loss", "held-out loss")]:
        for i, (family, points) in enumerate(sorted(series.items())):
            xs, ys = zip(*sorted((r["samples"], r[key]) for r in points))
            monolith = points[0]["kind"] == "monolith"
            ax.plot(xs, ys, marker="o" if monolith else "s", linestyle="--" if monolith else "-",
                    color=colours(i % 10), label=family + ("" if monolith else ", top-2"))
        ax.set_xscale("log")
        ax.set_xlabel("training samples (= training FLOPs / cost per sample; seed included)")
        ax.set_ylabel(f"{label} (lower is better)")
        ax.grid(alpha=0.3)
    # The legend under both panels, two columns: the rows' descriptions are long.
    handles, labels = axes[1].get_legend_handles_labels()
    legend_height = 0.22 * -(-len(labels) // 2)  # inches: a line per two rows
    fig.set_size_inches(13, 4.5 + legend_height)
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, legend_height / (4.5 + legend_height) + 0.01, 1, 1))
    fig.savefig(path, dpi=120)


def systems_on_disk(out: Path, budgets: list[float]) -> list[System]:
    """Every row with a run under OUT/runs, whatever this call's --budgets, --rows and --only: the table and the
    plot always show the whole sweep so far. A row's name ends in its budget (`-2x`)."""
    names = {p.name for p in (out / "runs").iterdir()} if (out / "runs").is_dir() else set()
    budgets = sorted(set(budgets) | {float(m[1]) for n in names if (m := re.search(r"-(\d+(?:\.\d+)?)x$", n))})
    # One budget at a time: rows() puts its one-lever rows at the middle budget of those it is given.
    found = {s.name: s for b in budgets for s in rows([b], "all") + k8_rows([b]) if s.name in names}
    return list(found.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/quality")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--budgets", default="0.25,1,4", help="Comma-separated multiples of the demo's 460,800 samples.")
    parser.add_argument("--rows", default="all", choices=["core", "all", "k8"],
                        help="core: monoliths and the main mixture only; k8: the eight-expert rows alone.")
    parser.add_argument("--only", default="", help="Comma-separated system names to run (default: every row).")
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--guidance", default="4", help="One scale for every row, or a comma-separated grid to "
                        "choose from per row (e.g. 1.5,3,5) on --select-samples images.")
    parser.add_argument("--select-samples", type=int, default=500)
    parser.add_argument("--strategies", default="top1,top2,full", help="The mixture rows' strategies (a row's "
                        "table lists those it was scored with; with a one-hot router they coincide, so fewer save time).")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    grid = [float(g) for g in args.guidance.split(",")]
    out = Path(args.out)
    budgets = [float(b) for b in args.budgets.split(",")]
    systems = rows(budgets, args.rows)
    if args.only:
        by_name = {s.name: s for s in systems}
        unknown = [name for name in args.only.split(",") if name not in by_name]
        if unknown:
            parser.error(f"--only: no row named {', '.join(unknown)} at --budgets {args.budgets} (--rows "
                         f"{args.rows}); the rows there: {', '.join(by_name)}")
        systems = [by_name[name] for name in args.only.split(",")]  # in the order given
    started = time.perf_counter()
    if not args.report_only:
        run_sweep(out, systems, args.data, args.num_samples, grid, args.select_samples, args.strategies)
    lines = table(out, systems_on_disk(out, budgets), args.num_samples, grid, args.select_samples)
    (out / "table.md").write_text(markdown(lines))
    (out / "table.json").write_text(json.dumps(lines, indent=2))
    plot(lines, out / "fid_vs_compute.png")
    print(markdown(lines))
    print(f"wrote {out}/table.md, table.json, fid_vs_compute.png ({(time.perf_counter() - started) / 60:.1f} min)")


if __name__ == "__main__":
    main()
