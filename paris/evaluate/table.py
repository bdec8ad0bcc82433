"""`paris evaluate`: the paper's table per routing strategy: FID, text alignment, held-out loss, and cost.

FID compares the generated images with held-out real images (paris.evaluate.reference), whose captions are
the prompts. Text alignment is measured two ways: prompt adherence on Fashion-MNIST (paris.evaluate.adherence)
and, given a CLIP model, the CLIP score (paris.models.clip_score) on any data. The held-out loss
(paris.evaluate.heldout) is the training objective on those real images: paired between runs, so finer than FID.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from paris import layout
from paris import progress
from paris.config import EvalConfig, SampleConfig
from paris.data.fashion_captions import asked_words, attribute_adherence, attribute_words, measure
from paris.clusters.partition import read_meta
from paris.evaluate.adherence import fashion_classifier, predict, scores
from paris.evaluate.fid import InceptionFeatures, frechet_distance
from paris.evaluate.heldout import held_out_loss
from paris.evaluate.memorisation import NearestTraining, copy_threshold, memorised_shares
from paris.evaluate.reference import load_reference
from paris.roster.grow import held_classes
from paris.roster.retired import retired_experts
from paris.models.clip_score import ClipScore
from paris.models.io import require_pretrained
from paris.inference.pipeline import ParisPipeline
from paris.inference.routing import parse_strategy
from paris.run import RunDir


def evaluate_run(run_url: str, cfg: EvalConfig, **sampling) -> dict:
    """The paper's table on a run: per strategy, FID against held-out real images, prompt adherence
    (Fashion-MNIST), CLIP score (given a CLIP model), expert passes and seconds per image. Images are sampled
    with the run's sample config, where `sampling` (SampleConfig fields: steps=, guidance=, route_every=,
    quantize=) replaces its values. Writes eval/report.json and eval/report.md; a measure not taken has no key."""
    run = RunDir(run_url)
    config = run.read_config()
    # A grown run (paris add-expert) is compared with held-out images of all the classes it holds.
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, classes=held_classes(run, config.data.classes)))
    sample = config.sample.updated(**sampling)
    _check_rows(run, cfg.strategy_list)
    baseline = _baseline(run) if "monolith" in cfg.strategy_list else None
    features = InceptionFeatures(cfg.inception)  # the models load before any work: a bad path fails at once
    clip = ClipScore(cfg.clip_model) if cfg.clip_model else None
    real = load_reference(config, cfg.num_samples, cfg.reference, cfg.reference_source)
    classifier = None  # adherence needs classes: only Fashion-MNIST references have them (and a train split beside)
    if real.labels is not None:
        # The instrument is one per machine, whatever --seed draws the samples: a guidance search at another seed
        # measures with the same classifier and does not train a second one.
        classifier = fashion_classifier(real.path, cfg.classifier_images)
    progress.say(f"evaluate: Inception features of {len(real.prompts)} reference images ({real.where})")
    real_features = features(real.images)
    report = {"num_samples": len(real.prompts), "reference": real.where, "steps": sample.steps,
              "route_every": sample.route_every, "guidance": sample.guidance, "seed": cfg.seed,
              "quantize": sample.quantize, **({"lora_scale": sample.lora_scale} if sample.lora_scale else {})}
    if classifier is not None:
        report["classifier_test_accuracy"], report["classifier_test_accuracy_by_class"] = scores(
            predict(classifier, real.images), real.labels)
    if clip is not None:
        report["reference_clip_score"] = clip(real.images, real.prompts)
    if baseline is not None:
        report["baseline"] = baseline
    report["strategies"] = rows = {}
    asks_attributes = real.labels is not None and any(asked_words(p) for p in real.prompts)
    nearest, threshold = None, 0.0
    if config.data.autoencoder == "identity":  # generated images and training latents are both pixels
        nearest = NearestTraining.of_run(run)
        report["copy_threshold"] = threshold = copy_threshold(nearest(real.images)[0])
    measures = Measures(features, classifier, clip, asks_attributes, nearest, threshold)
    for strategy in cfg.strategy_list:
        pipe = ParisPipeline.from_run(run_url, model=single_model(strategy), router=router_name(strategy),
                                      quantize=sample.quantize)
        # The strengths name the mixture's LoRA experts; one model alone (monolith, student) takes none.
        row_sample = sample if single_model(strategy) is None else dataclasses.replace(sample, lora_scale=None)
        sampled = sample_and_score(pipe, strategy, real.prompts, real.labels, row_sample, cfg.seed, cfg.batch_size,
                                   measures)
        rows[strategy] = row = {"fid": frechet_distance(sampled.pop("features"), real_features), **sampled}
        row.update(held_out_loss(pipe.mixture, routing_rule(strategy), real.images, real.prompts, cfg.seed,
                                 cfg.batch_size))
        progress.say(f"evaluate: {strategy}: FID {row['fid']:.2f}, {row['seconds_per_image']:.3f} s per image")
    run.write_json(layout.EVAL_REPORT, report)
    run.write_text(layout.EVAL_TABLE, report_markdown(report))
    return report


def _check_rows(run: RunDir, strategies: list[str]) -> None:
    """Fail before the instruments load (a classifier may train for minutes) on a row that cannot sample: a missing
    monolith or student, an oracle of a retired expert."""
    num_experts, retired = read_meta(run)["num_clusters"], retired_experts(run)
    for strategy in strategies:
        if single_model(strategy):
            require_pretrained(run, layout.final(single_model(strategy)))
        else:
            parse_strategy(routing_rule(strategy), num_experts, retired)


def routing_rule(strategy: str) -> str:
    """The routing rule a table row samples with: "monolith" and "student" are pipelines of one model and no
    router (top1); "top2@text" is top2 with router-text/ (layout.router)."""
    return "top1" if single_model(strategy) else strategy.partition("@")[0]


def single_model(strategy: str) -> str | None:
    """The one-model job folder a table row samples: monolith/, student/ ("student") or student-NAME/
    ("student@NAME", `paris distill --name NAME`); None for a routing rule of the mixture."""
    name, _, suffix = strategy.partition("@")
    if name == "monolith":
        return layout.MONOLITH
    return layout.student(suffix) if name == "student" else None


def router_name(strategy: str) -> str:
    """Which of the run's routers a table row samples with: "" (router/) or the name after "@"."""
    return "" if single_model(strategy) else strategy.partition("@")[2]


def _baseline(run: RunDir) -> dict:
    """How the monolith's compute was matched to the experts' (a monolith from before protocols: equal-batch)."""
    trained = run.read_json(f"{layout.final(layout.MONOLITH)}/manifest.json")
    return {"protocol": trained.get("protocol", "equal-batch"), "steps": trained["steps"],
            "batch_size": trained["samples_seen"] // trained["steps"], "samples_seen": trained["samples_seen"]}


@dataclasses.dataclass
class Measures:
    """What to score each generated image with; None: not measured."""

    features: InceptionFeatures | None = None  # for FID
    classifier: torch.nn.Module | None = None  # prompt adherence: needs the prompts' labels
    clip: ClipScore | None = None
    attributes: bool = False  # attribute adherence (Fashion-MNIST's described captions): needs the labels too
    nearest: NearestTraining | None = None  # memorisation (pixel-space runs), with the held-out images' threshold
    copy_threshold: float = 0.0


def sample_and_score(pipe: ParisPipeline, strategy: str, prompts: list[str], labels: torch.Tensor | None,
                     sample: SampleConfig, seed: int, batch_size: int, measures: Measures,
                     keep_images: bool = False) -> dict:
    """One image per prompt with one strategy, scored batch by batch (so memory does not grow with the number
    of samples): Inception features, adherence and CLIP score when measured, and the cost. Batch i is drawn
    with seed + i; with `keep_images`, the images come back too. Shows a bar over the images and, under it, one
    over each batch's steps."""
    features, predicted, clip_scores, shown, nearest, kept = [], [], [], [], [], []
    seconds, passes, forward_passes, resident = 0.0, 0.0, 0.0, 0
    batches = -(-len(prompts) // batch_size)
    with progress.bar(f"sample: {strategy}", len(prompts), unit="images") as bar:
        for i in range(0, len(prompts), batch_size):
            batch = prompts[i : i + batch_size]
            tick = time.perf_counter()
            rule = dataclasses.replace(sample, strategy=routing_rule(strategy), seed=seed + i)
            # A batch of a big model takes minutes: its steps get a bar of their own, under the images' one.
            with progress.bar(f"batch {i // batch_size + 1}/{batches}", rule.steps) as steps:
                images, stats = pipe.generate(batch, rule, on_step=lambda step: steps.update(completed=step))
            seconds += time.perf_counter() - tick  # the cost column counts sampling only, not scoring
            passes += stats["expert_passes_per_image"] * len(images)
            forward_passes += stats["forward_passes_per_image"] * len(images)
            resident = max(resident, stats["resident_expert_bytes"])
            if measures.features is not None:
                features.append(measures.features(images))
            if measures.classifier is not None:
                predicted.append(predict(measures.classifier, images))
            if measures.clip is not None:
                clip_scores.append(measures.clip.pairs(images, batch))
            if measures.attributes:
                shown += attribute_words(measure(images), labels[i : i + batch_size])
            if measures.nearest is not None:
                nearest.append(measures.nearest(images))
            if keep_images:
                kept.append(images)
            bar.update(advance=len(images))
    n = len(prompts)
    row = {"features": np.concatenate(features)} if features else {}
    if measures.classifier is not None:
        row["prompt_adherence"], row["prompt_adherence_by_class"] = scores(torch.cat(predicted), labels)
    if measures.clip is not None:
        row["clip_score"] = torch.cat(clip_scores).mean().item()
    if measures.attributes:
        row["attribute_adherence"], row["attribute_adherence_by_attribute"] = attribute_adherence(
            [asked_words(p) for p in prompts], shown)
    if nearest:
        row["memorised_share"], row["memorised_share_by_expert"] = memorised_shares(
            torch.cat([d for d, _ in nearest]), torch.cat([c for _, c in nearest]), measures.copy_threshold)
    if keep_images:
        row["images"] = torch.cat(kept)
    return {**row, "expert_passes_per_image_step": passes / n, "forward_passes_per_image_step": forward_passes / n,
            "seconds_per_image": seconds / n, "resident_expert_bytes": resident}


COLUMNS = [  # (JSON key, header, format) of the table; a column appears when its measure was taken
    ("fid", "FID", "{:.2f}"),
    ("prompt_adherence", "prompt adherence", "{:.1%}"),
    ("attribute_adherence", "attribute adherence", "{:.1%}"),
    ("clip_score", "CLIP score", "{:.2f}"),
    ("memorised_share", "near-copies", "{:.1%}"),
    ("held_out_loss", "held-out loss", "{:.4f}"),
    ("expert_passes_per_image_step", "expert passes / image / step", "{:.2f}"),
    ("seconds_per_image", "s / image", "{:.3f}"),
]


def report_markdown(report: dict) -> str:
    notes = [f"FID against {report['num_samples']} held-out images of {report['reference']} "
             f"({report['steps']} steps, guidance {report['guidance']}"
             + (f", router every {report['route_every']} steps)" if report.get("route_every", 1) > 1 else ")")]
    if report.get("quantize", "none") != "none":  # reports before int8 experts have no key
        notes.append(f"experts {report['quantize']}")
    if "classifier_test_accuracy" in report:
        notes.append(f"classifier test accuracy {report['classifier_test_accuracy']:.1%}")
    if "reference_clip_score" in report:
        notes.append(f"CLIP score of the real images with their captions {report['reference_clip_score']:.2f}")
    if "copy_threshold" in report:
        notes.append(f"near-copies: images closer to a training image than 99% of the held-out ones "
                     f"(L2 {report['copy_threshold']:.2f})")
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
    if "classifier_test_accuracy_by_class" in report:  # under the classifier's own accuracy on the real images
        lines += ["", *by_class_table({"classifier on the real images": report["classifier_test_accuracy_by_class"]} | {
            name: row["prompt_adherence_by_class"] for name, row in report["strategies"].items()})]
    return "\n".join(lines) + "\n"


def by_class_table(rows: dict[str, dict[str, float]]) -> list[str]:
    """Markdown lines of prompt adherence per class, one row per name, the classes of the first row as columns."""
    classes = list(next(iter(rows.values())))
    return ["| prompt adherence by class | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|",
            *(f"| {name} | " + " | ".join(f"{row.get(c, float('nan')):.0%}" for c in classes) + " |"
              for name, row in rows.items())]
