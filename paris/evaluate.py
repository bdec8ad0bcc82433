"""Evaluation: the paper's table per routing strategy: FID, text alignment, and cost.

FID compares the generated images with held-out real images (paris.reference), whose captions are the
prompts. Text alignment is measured two ways: prompt adherence on Fashion-MNIST (does a generated image show
the class its prompt asked for?) and, given a CLIP model, the CLIP score (paris.clip_score) on any data.
For adherence, a small CNN trained on the real Fashion-MNIST train split classifies each generated image
(its accuracy on the real test images is reported beside it, so the reader knows how much to trust it).
"""

from __future__ import annotations

import hashlib
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import track
from torch import nn

from paris.errors import ParisError
from paris.randomness import EpochBatches, step_generator

console = Console(stderr=True)


CLASSIFIER_RECIPE = "bn-dropout-4ep-cosine-2e-3"  # part of the cache key: change it when the recipe changes


class FashionClassifier(nn.Sequential):
    """1x32x32 -> 10 logits: two batch-normed conv blocks and an MLP head with dropout (about 0.55M parameters)."""

    def __init__(self, num_classes: int = 10):
        super().__init__(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, num_classes),
        )


def train_classifier(images: torch.Tensor, labels: torch.Tensor, epochs: float = 4.0, batch_size: int = 128,
                     lr: float = 2e-3, seed: int = 0) -> FashionClassifier:
    torch.manual_seed(seed)
    model = FashionClassifier(int(labels.max()) + 1).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    batches = EpochBatches(len(images), batch_size, seed)
    steps = int(epochs * len(images) / batch_size)
    for step in range(steps):
        index = batches(step)
        # Random shifts of up to 2 pixels: generated images are rarely centred exactly like the originals.
        dx, dy = torch.randint(-2, 3, (2,), generator=step_generator(seed, step)).tolist()
        x = torch.roll(images[index], shifts=(dy, dx), dims=(2, 3))
        loss = F.cross_entropy(model(x), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for group in optimizer.param_groups:  # cosine decay: the last epochs settle instead of jittering
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        optimizer.step()
    return model.eval()


def fashion_classifier(data_path: str, limit: int = 0, seed: int = 0) -> FashionClassifier:
    """The adherence classifier, trained on the real train split once per machine and then read from a cache
    ($PARIS_CACHE, else ~/.cache/paris): training it takes minutes on a CPU, and every evaluation needs it."""
    from paris.data import fashion_mnist
    from paris.run import RunDir

    key = hashlib.sha256(f"{os.path.abspath(data_path)}|{limit}|{seed}|{CLASSIFIER_RECIPE}".encode()).hexdigest()[:16]
    cache, name = RunDir(os.environ.get("PARIS_CACHE", os.path.expanduser("~/.cache/paris"))), f"fashion-classifier-{key}.safetensors"
    if cache.exists(name):
        model = FashionClassifier()
        model.load_state_dict(cache.load_tensors(name))
        return model.eval()
    images, labels = fashion_mnist.load(data_path, "train", limit)
    model = train_classifier(images, labels, seed=seed)
    cache.save_tensors(name, model.state_dict())  # written whole, even with two evaluations writing it at once
    return model


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    predicted = torch.cat([model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])
    return (predicted == labels).float().mean().item()


def check_options(strategies: list[str], num_samples: int, route_every: int = 0) -> None:
    """The mistakes an evaluation would otherwise meet only after minutes of work, each a one-line error."""
    from paris.routing import parse_strategy

    if not strategies:
        raise ParisError("--strategies is empty; give a comma-separated list, e.g. monolith,top1,top2,full")
    for name in strategies:
        if name != "monolith":
            parse_strategy(name)
    if num_samples < 2:
        raise ParisError(f"--num-samples must be at least 2 for FID, got {num_samples}")
    if route_every < 0:
        raise ParisError(f"--route-every must be at least 1 (or 0 for the run's sample.route_every), got {route_every}")


def evaluate_run(run_url: str, strategies: list[str], num_samples: int, steps: int = 0, guidance: float | None = None,
                 seed: int = 0, batch_size: int = 100, classifier_images: int = 0, inception: str = "",
                 clip_model: str = "", reference: str = "", reference_source: str = "", route_every: int = 0) -> dict:
    """The paper's table on a run: per strategy, FID against held-out real images, prompt adherence
    (Fashion-MNIST), CLIP score (given a CLIP model), expert passes and seconds per image. Writes
    eval/report.json, eval/report.md and eval/report.png; a measure not taken has no key in the JSON.
    steps, guidance and route_every default to the run's sample config."""
    from paris.clip_score import ClipScore
    from paris.fid import InceptionFeatures, frechet_distance
    from paris.reference import load_reference
    from paris.run import RunDir

    check_options(strategies, num_samples, route_every)
    run = RunDir(run_url)
    config = run.read_config()
    sampling = {"steps": steps or config.sample.steps, "route_every": route_every or config.sample.route_every,
                "guidance": config.sample.guidance if guidance is None else guidance}
    real = load_reference(config, num_samples, reference, reference_source)
    clip = ClipScore(clip_model) if clip_model else None  # loaded before sampling: a bad path fails at once
    classifier = None  # adherence needs the classes: a Fashion-MNIST run, compared with Fashion-MNIST images
    if config.data.source == "fashion-mnist" and real.labels is not None:
        classifier = fashion_classifier(config.data.path, classifier_images, seed)
    features = InceptionFeatures(inception)
    console.print(f"evaluate: Inception features of {len(real.prompts)} reference images ({real.where})")
    real_features = features(real.images)
    report = {"num_samples": len(real.prompts), "reference": real.where, **sampling, "seed": seed}
    if classifier is not None:
        report["classifier_test_accuracy"] = accuracy(classifier, real.images, real.labels)
    if clip is not None:
        report["reference_clip_score"] = clip(real.images, real.prompts)
    if "monolith" in strategies:  # how its compute was matched to the experts'
        trained = run.read_json("monolith/final/manifest.json")  # a monolith from before protocols: equal-batch
        report["baseline"] = {"protocol": trained.get("protocol", "equal-batch"), "steps": trained["steps"],
                              "batch_size": trained["samples_seen"] // trained["steps"],
                              "samples_seen": trained["samples_seen"]}
    report["strategies"] = rows = {}
    measures = {"features": features, "classifier": classifier, "clip": clip}
    for strategy in strategies:
        sampled = _sample_and_score(run_url, strategy, real, sampling, seed, batch_size, measures)
        rows[strategy] = row = {"fid": frechet_distance(sampled.pop("features"), real_features), **sampled}
        console.print(f"evaluate: {strategy}: FID {row['fid']:.2f}, {row['seconds_per_image']:.3f} s per image")
    run.write_json("eval/report.json", report)
    run.write_text("eval/report.md", report_markdown(report))
    _plot(run, rows)
    return report


def _sample_and_score(run_url: str, strategy: str, real, sampling: dict, seed: int, batch_size: int,
                      measures: dict) -> dict:
    """One image per reference prompt with one strategy, scored batch by batch (so memory does not grow with
    the number of samples): Inception features, adherence and CLIP score when measured, and the cost."""
    from paris.pipeline import ParisPipeline

    monolith = strategy == "monolith"
    pipe = ParisPipeline.from_run(run_url, monolith=monolith)
    features, correct, clip_scores, seconds, passes = [], 0.0, [], 0.0, 0.0
    for i in track(range(0, len(real.prompts), batch_size), f"evaluate: {strategy}", console=console,
                   disable=not console.is_terminal):
        prompts = real.prompts[i : i + batch_size]
        tick = time.perf_counter()
        images, stats = pipe.generate(prompts, strategy="top1" if monolith else strategy, seed=seed + i, **sampling)
        seconds += time.perf_counter() - tick  # the cost column counts sampling only, not scoring
        passes += stats["expert_passes_per_image"] * len(images)
        features.append(measures["features"](images))
        if measures["classifier"] is not None:
            correct += accuracy(measures["classifier"], images, real.labels[i : i + batch_size]) * len(images)
        if measures["clip"] is not None:
            clip_scores.append(measures["clip"].pairs(images, prompts))
    n = len(real.prompts)
    row = {"features": np.concatenate(features)}
    if measures["classifier"] is not None:
        row["prompt_adherence"] = correct / n
    if measures["clip"] is not None:
        row["clip_score"] = torch.cat(clip_scores).mean().item()
    return {**row, "expert_passes_per_image_step": passes / n, "seconds_per_image": seconds / n}


COLUMNS = [  # (JSON key, header, format) of the table; a column appears when its measure was taken
    ("fid", "FID", "{:.2f}"),
    ("prompt_adherence", "prompt adherence", "{:.1%}"),
    ("clip_score", "CLIP score", "{:.2f}"),
    ("expert_passes_per_image_step", "expert passes / image / step", "{:.2f}"),
    ("seconds_per_image", "s / image", "{:.3f}"),
]


def report_markdown(report: dict) -> str:
    notes = [f"FID against {report['num_samples']} held-out images of {report['reference']} "
             f"({report['steps']} steps, guidance {report['guidance']}"
             + (f", router every {report['route_every']} steps)" if report.get("route_every", 1) > 1 else ")")]
    if "classifier_test_accuracy" in report:
        notes.append(f"classifier test accuracy {report['classifier_test_accuracy']:.1%}")
    if "reference_clip_score" in report:
        notes.append(f"CLIP score of the real images with their captions {report['reference_clip_score']:.2f}")
    if "baseline" in report:
        b = report["baseline"]
        notes.append(f"monolith: {b['steps']:,} steps of {b['batch_size']} ({b['samples_seen']:,} samples, "
                     f"{b['protocol']} protocol)")
    first = next(iter(report["strategies"].values()))
    columns = [c for c in COLUMNS if c[0] in first]
    lines = ["; ".join(notes), "", "| strategy | " + " | ".join(header for _, header, _ in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for name, row in report["strategies"].items():
        lines.append(f"| {name} | " + " | ".join(fmt.format(row[key]) for key, _, fmt in columns) + " |")
    return "\n".join(lines) + "\n"


def _plot(run, rows: dict) -> None:
    from paris.plots import bar_chart

    panels = {"FID (lower is better)": "fid", "prompt adherence": "prompt_adherence", "CLIP score": "clip_score"}
    measured = next(iter(rows.values()))
    bar_chart(run, {title: {name: row[key] for name, row in rows.items()}
                    for title, key in panels.items() if key in measured}, "eval/report.png")
