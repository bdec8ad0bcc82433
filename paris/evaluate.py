"""Evaluation: prompt adherence (does a generated image show the class its prompt asked for?), FID, cost.

A small CNN trained on the real Fashion-MNIST train split (its accuracy on the test split is reported
beside it, so the reader knows how much to trust it) classifies each generated image; adherence is the
share whose predicted class is the prompt's class.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from paris.errors import ParisError
from paris.randomness import EpochBatches, step_generator


class FashionClassifier(nn.Sequential):
    """1x32x32 -> 10 logits: two conv blocks and an MLP head (about 0.55M parameters)."""

    def __init__(self, num_classes: int = 10):
        super().__init__(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, num_classes),
        )


def train_classifier(images: torch.Tensor, labels: torch.Tensor, epochs: float = 2.0, batch_size: int = 128,
                     lr: float = 1e-3, seed: int = 0) -> FashionClassifier:
    torch.manual_seed(seed)
    model = FashionClassifier(int(labels.max()) + 1)
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
        optimizer.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    predicted = torch.cat([model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])
    return (predicted == labels).float().mean().item()


def evaluate_run(run_url: str, strategies: list[str], num_samples: int, steps: int = 0, guidance: float | None = None,
                 seed: int = 0, batch_size: int = 100, classifier_images: int = 0, inception: str = "") -> dict:
    """The paper's table on a run: per strategy, FID against held-out real images, prompt adherence, expert
    passes and seconds per image. Writes eval/report.json, eval/report.md and eval/report.png."""
    from paris.data import fashion_mnist
    from paris.fid import InceptionFeatures, frechet_distance
    from paris.pipeline import ParisPipeline
    from paris.run import RunDir

    run = RunDir(run_url)
    config = run.read_config()
    if config.data.source != "fashion-mnist":
        raise ParisError(f"evaluate needs held-out labelled images; this version knows fashion-mnist, not {config.data.source}")
    steps, guidance = steps or config.sample.steps, config.sample.guidance if guidance is None else guidance
    real, labels = fashion_mnist.load(config.data.path, "test", num_samples)
    prompts = [fashion_mnist.class_prompt(int(label)) for label in labels]  # the real set's class mix
    train_images, train_labels = fashion_mnist.load(config.data.path, "train", classifier_images)
    classifier = train_classifier(train_images, train_labels, epochs=1.0, seed=seed)
    features = InceptionFeatures(inception)
    real_features = features(real)
    rows = {}
    for strategy in strategies:
        monolith = strategy == "monolith"
        pipe = ParisPipeline.from_run(run_url, monolith=monolith)
        start, images, passes = time.perf_counter(), [], 0.0
        for i in range(0, len(prompts), batch_size):
            batch, stats = pipe.generate(prompts[i : i + batch_size], strategy="top1" if monolith else strategy,
                                         steps=steps, guidance=guidance, seed=seed + i,
                                         route_every=config.sample.route_every)
            images.append(batch)
            passes += stats["expert_passes_per_image"] * len(batch)
        seconds = (time.perf_counter() - start) / len(prompts)
        images = torch.cat(images)
        rows[strategy] = {"fid": frechet_distance(features(images), real_features),
                          "prompt_adherence": accuracy(classifier, images, labels),
                          "expert_passes_per_image_step": passes / len(prompts), "seconds_per_image": seconds}
    report = {"num_samples": len(prompts), "steps": steps, "guidance": guidance, "seed": seed,
              "route_every": config.sample.route_every,
              "classifier_test_accuracy": accuracy(classifier, real, labels), "strategies": rows}
    run.write_json("eval/report.json", report)
    run.write_text("eval/report.md", report_markdown(report))
    _plot(run, rows)
    return report


def report_markdown(report: dict) -> str:
    lines = [f"FID against {report['num_samples']} held-out test images ({report['steps']} steps, guidance "
             f"{report['guidance']}); classifier test accuracy {report['classifier_test_accuracy']:.1%}", "",
             "| strategy | FID | prompt adherence | expert passes / image / step | s / image |", "|---|---|---|---|---|"]
    for name, r in report["strategies"].items():
        lines.append(f"| {name} | {r['fid']:.2f} | {r['prompt_adherence']:.1%} | "
                     f"{r['expert_passes_per_image_step']:.2f} | {r['seconds_per_image']:.3f} |")
    return "\n".join(lines) + "\n"


def _plot(run, rows: dict) -> None:
    from paris.plots import bar_chart

    bar_chart(run, {"FID (lower is better)": {k: r["fid"] for k, r in rows.items()},
                    "prompt adherence": {k: r["prompt_adherence"] for k, r in rows.items()}}, "eval/report.png")
