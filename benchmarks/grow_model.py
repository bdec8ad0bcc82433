"""Grow a model without retraining it, on Fashion-MNIST: add an expert for classes the others never saw, a router
trained only on the experts' own images, and the model with each expert missing.

Runs (the demo's config: tiny experts of 1,800 steps of 64, a tiny router, 50 Euler steps, guidance 4):
  grown    classes 0-7 prepared, K=4 experts (k-means); then `paris add-expert --set data.classes=[8,9]` makes
           cluster 4, `paris train-expert -e 4` trains it and the router is trained for 5 experts
  scratch  all ten classes prepared at once, K=5 experts and a router: the same total compute
  samples  the grown run's experts, with a router trained by `paris train-router --from-expert-samples N` on
           images drawn by `paris sample-expert` while data/ is moved away (the same steps as grown's router)
  missing  the grown run with one expert retired (`paris remove-expert`), each in turn
Each system is scored twice: with Paris's router, which sees only x_t, and with DDM's, which also reads the
prompt (`router.use_text`; the `-text` rows, the same experts, scored with top-2 alone for time).
Every FID row is `paris evaluate` (the same sampler, steps, guidance, reference images and FID code), against the
test split of all ten classes. Adherence on the new classes: 100 images per prompt of classes 8 and 9, scored by
the adherence classifier. Router accuracy: both routers on the same real held-out images of the grown run.
Each stage leaves a file under OUT, so the benchmark can be stopped and rerun to continue.

    .venv/bin/python benchmarks/grow_model.py --out runs/grow
    .venv/bin/python benchmarks/grow_model.py --out runs/grow --report-only
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from quality_vs_compute import paris  # one paris command in its own process, one thread

OLD, NEW = list(range(8)), [8, 9]


def stage(out: Path, name: str, make) -> dict:
    """The result of stage `name`: read from OUT/results/<name>.json, or made now and written there."""
    path = out / "results" / f"{name}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        result = make()
        path.write_text(json.dumps(result, indent=2))
    return json.loads(path.read_text())


def prepare_and_partition(run: Path, config: Path, clusters: int, log: Path, *settings: str) -> None:
    paris("prepare", str(run), "--config", str(config), *settings, log=log)
    if not (run / "partition" / "meta.json").exists():  # rerun after add-expert: never partition again
        paris("partition", str(run), "--clusters", str(clusters), log=log)


def train(run: Path, experts: range, log: Path) -> None:
    for k in experts:
        paris("train-expert", str(run), "--expert", str(k), log=log)  # a finished expert returns at once
    paris("train-router", str(run), log=log)


def evaluate(run: Path, strategies: str, num: int, log: Path) -> dict:
    paris("evaluate", str(run), "--strategies", strategies, "--num-samples", str(num), log=log)
    return json.loads((run / "eval" / "report.json").read_text())


def build(out: Path, data: str, num: int, per_expert: int) -> None:
    from paris.config import to_yaml
    from paris.demo import demo_config

    logs = out / "logs"
    config = out / "demo.yaml"
    config.write_text(to_yaml(demo_config(data)))
    grown, scratch, samples = out / "grown", out / "scratch", out / "samples"

    def make_grown():
        prepare_and_partition(grown, config, 4, logs / "grown.log", "--set", f"data.classes={OLD}")
        for k in range(4):
            paris("train-expert", str(grown), "--expert", str(k), log=logs / "grown.log")
        before = _hashes(grown, 4)
        if "added" not in json.loads((grown / "data" / "manifest.json").read_text()):
            paris("add-expert", str(grown), "--data", data, "--set", f"data.classes={NEW}", log=logs / "grown.log")
        train(grown, range(4, 5), logs / "grown.log")
        return {"old_experts_unchanged": _hashes(grown, 4) == before}

    def make_scratch():
        prepare_and_partition(scratch, config, 5, logs / "scratch.log")
        train(scratch, range(5), logs / "scratch.log")
        return {}

    def make_samples():
        if samples.exists():
            shutil.rmtree(samples)
        shutil.copytree(grown, samples, ignore=shutil.ignore_patterns("router*", "eval", "ckpt"))
        for k in range(5):
            paris("sample-expert", str(samples), "--expert", str(k), "--num", str(per_expert), log=logs / "samples.log")
        steps = make_samples_router_steps()
        hidden = out / "data-hidden"
        (samples / "data").rename(hidden)  # the router job cannot read what is not there
        try:
            paris("train-router", str(samples), "--from-expert-samples", str(per_expert), "--set",
                  f"router.steps={steps}", log=logs / "samples.log")
        finally:
            hidden.rename(samples / "data")
        return {"router_steps": steps}

    def with_text_router(name: str, run: Path):
        """A copy of `run` whose router also reads the prompt (DDM's), trained as its image-only one was."""
        copy = out / f"{name}-text"
        if copy.exists():
            shutil.rmtree(copy)
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("router*", "eval", "ckpt"))
        log, text = logs / f"{name}-text.log", ["--set", "router.use_text=true"]
        if name != "samples":
            paris("train-router", str(copy), *text, log=log)
            return {}
        steps = make_samples_router_steps()
        (copy / "data").rename(out / "data-hidden")
        try:
            paris("train-router", str(copy), "--from-expert-samples", str(per_expert), "--set", f"router.steps={steps}",
                  *text, log=log)
        finally:
            (out / "data-hidden").rename(copy / "data")
        return {"router_steps": steps}

    def make_samples_router_steps() -> int:
        return json.loads((grown / "router" / "final" / "manifest.json").read_text())["steps"]

    stage(out, "grown-trained", make_grown)
    stage(out, "scratch-trained", make_scratch)
    stage(out, "samples-trained", make_samples)
    systems = {"grown": grown, "scratch": scratch, "samples": samples}
    for name, run in list(systems.items()):
        stage(out, f"{name}-text-trained", lambda name=name, run=run: with_text_router(name, run))
        systems[f"{name}-text"] = out / f"{name}-text"
    for name, run in systems.items():
        rules = "top2" if name.endswith("-text") else "top1,top2"  # on 2 cores an evaluated rule costs 7 minutes
        stage(out, f"{name}-eval", lambda run=run, name=name, rules=rules: evaluate(run, rules, num, logs / f"{name}.log"))
        stage(out, f"{name}-new-classes", lambda run=run: new_class_adherence(run, data))
    for name in ("grown", "samples", "grown-text", "samples-text"):
        stage(out, f"{name}-router-accuracy", lambda run=systems[name]: router_accuracy_on_data(run, grown))
    for k in range(5):
        def missing(k=k):
            paris("remove-expert", str(grown), "--expert", str(k), log=logs / "missing.log")
            try:
                return evaluate(grown, "top2", num, logs / "missing.log")
            finally:
                paris("remove-expert", str(grown), "--expert", str(k), "--restore", log=logs / "missing.log")
        stage(out, f"missing-{k}-eval", missing)


def _hashes(run: Path, k: int) -> dict:
    import hashlib

    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for e in range(k) for p in sorted((run / "experts" / str(e)).rglob("*")) if p.is_file()}


def new_class_adherence(run: Path, data: str, per_class: int = 100) -> dict:
    """top1/top2 adherence on prompts of the new classes alone (the classes the first four experts never saw)."""
    import torch

    from paris.config import SampleConfig
    from paris.data.fashion_mnist import class_prompt
    from paris.evaluate.adherence import fashion_classifier
    from paris.evaluate.table import Measures, sample_and_score
    from paris.inference.pipeline import ParisPipeline
    from paris.run import RunDir

    sample: SampleConfig = RunDir(str(run)).read_config().sample
    labels = torch.tensor(NEW).repeat_interleave(per_class)
    prompts = [class_prompt(int(c)) for c in labels]
    measures = Measures(classifier=fashion_classifier(data, None, 0))
    pipe = ParisPipeline.from_run(str(run))
    return {s: sample_and_score(pipe, s, prompts, labels, sample, 0, 100, measures)["prompt_adherence"]
            for s in ("top1", "top2")}


def router_accuracy_on_data(run: Path, data_run: Path) -> dict:
    """The router of `run` scored on the held-out real images of `data_run` (the grown run's own split)."""
    from paris.clusters.partition import load_partition
    from paris.data.store import load_store
    from paris.models.io import load_pretrained
    from paris.run import RunDir
    from paris.train.router import VAL_MOST, router_accuracy

    source = RunDir(str(data_run))
    cfg = source.read_config().router
    model = load_pretrained(RunDir(str(run)), "router/final")
    use_text = model.architecture.text_dim > 0  # a text router reads the prompts of the same images
    _, held_out = load_store(source, text=use_text).split(cfg.val_fraction, cfg.seed, VAL_MOST)
    return router_accuracy(model, held_out, load_partition(source).assignments, use_text, cfg.seed)


def report(out: Path) -> str:
    results = {p.stem: json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))}
    lines = ["| system | FID top-1 | FID top-2 | adherence top-2 (all ten) | adherence top-2 (new classes) |",
             "|---|---|---|---|---|"]
    systems = (("scratch", "scratch: 5 experts on all ten classes"),
               ("grown", "grown: 4 experts on 8 classes + 1 added"),
               ("samples", "grown, router trained on expert samples only"))
    for name, label in [*systems, *((f"{name}-text", f"{label}, text router") for name, label in systems)]:
        ev, new = results.get(f"{name}-eval"), results.get(f"{name}-new-classes")
        if ev and new:
            s = ev["strategies"]
            top1 = f"{s['top1']['fid']:.2f}" if "top1" in s else "–"
            lines.append(f"| {label} | {top1} | {s['top2']['fid']:.2f} | "
                         f"{s['top2']['prompt_adherence']:.1%} | {new['top2']:.1%} |")
    lines += ["", "| expert missing (grown, top-2) | FID | adherence |", "|---|---|---|"]
    for k in range(5):
        ev = results.get(f"missing-{k}-eval")
        if ev:
            row = ev["strategies"]["top2"]
            lines.append(f"| expert {k} | {row['fid']:.2f} | {row['prompt_adherence']:.1%} |")
    lines += ["", "| router | " + " | ".join(f"t {b}" for b in ("0.0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1.0"))
              + " | mean t<0.6 |", "|---" * 7 + "|"]
    for name in ("grown", "samples", "grown-text", "samples-text"):
        acc = results.get(f"{name}-router-accuracy")
        if acc:
            bands = list(acc["bands"].values())
            lines.append(f"| {name} | " + " | ".join(f"{b:.1%}" for b in bands) + f" | {sum(bands[:3]) / 3:.1%} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/grow")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--num-samples", type=int, default=1000, help="images per FID row")
    parser.add_argument("--per-expert", type=int, default=2000, help="images each expert draws for the router")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    if not args.report_only:
        build(out, args.data, args.num_samples, args.per_expert)
    print(report(out))


if __name__ == "__main__":
    main()
