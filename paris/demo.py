"""`paris demo`: the whole pipeline on Fashion-MNIST in pixel space, on a CPU, in minutes, in Paris's configuration.

prepare (captions that describe each image; image features learned without labels) -> partition (K=4) -> 4
experts as independent processes -> a router that sees only the noisy image -> sample with every strategy
-> a table of seconds per image and adherence, grids, the router's weights over t, loss curves and report.json.
With --full it then trains the one-model baseline at matched compute and DDM's router, which also reads the
prompt (router-text/), and writes the paper's table (`paris evaluate`: FID, adherence and cost of the monolith
and of top-1, top-2 and full with each router) to RUN/eval/.
Every stage resumes: rerunning after a crash picks up where it stopped.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from paris import layout
from paris import progress
from paris.clusters.partition import partition
from paris.config import (BaselineConfig, DataConfig, EvalConfig, ExpertTrainConfig, PartitionConfig, RouterTrainConfig,
                          RunConfig, SampleConfig)
from paris.data import fashion_mnist
from paris.data.prepare import prepare
from paris.errors import ParisError
from paris.evaluate.adherence import accuracy, fashion_classifier
from paris.evaluate.reference import load_reference
from paris.evaluate.table import Measures, evaluate_run, sample_and_score
from paris.images import grid, save_image
from paris.launch.local import launch_local, local_jobs
from paris.run import RunDir
from paris.inference.pipeline import ParisPipeline
from paris.inference.sampler import timesteps
from paris.train.expert import expert_steps, train_monolith
from paris.train.router import train_router

DEMO_STRATEGIES = ("top1", "top2", "full")
ROUTER_EPOCHS = 0.5
TEXT_ROUTER = "text"  # --full's second router: DDM's, which also reads the prompt (router-text/)


def demo_config(data: str = DataConfig.path) -> RunConfig:
    """Small enough for 2 CPU cores: a 1.3M-parameter expert per cluster, 4 clusters, pixel space.

    Paris's configuration: experts on clusters of self-supervised image features (SimCLR here, DINOv2 in the
    paper), a router that sees only the noisy image, top-2 sampling; captions that name the garment in several
    ways and say what its pixels show, so neither the clusters nor the prompt give the class away. The training
    recipe is what benchmarks/quality_vs_compute.py measured best at this size: DDM's split-batch protocol with
    each expert at lr 2e-3 (5e-4 trained every batch size far below its best), falling to 0 over the last 20%
    of the steps (the cooldown took about 5 FID points off both the monolith and the mixture at twice the
    demo's budget)."""
    return RunConfig(
        data=DataConfig(path=data, features="simclr", captions="described"),
        partition=PartitionConfig(num_clusters=4),
        expert=ExpertTrainConfig(preset="tiny", steps=3600, batch_size=16, lr=2e-3, warmup_steps=100, cooldown=0.2,
                                 ema_decay=0.999, checkpoint_every=500, log_every=50, threads=1, preview_every=1200,
                                 preview_prompts=[fashion_mnist.class_prompt(c) for c in range(10)]),  # one per class
        router=RouterTrainConfig(preset="tiny", epochs=ROUTER_EPOCHS, batch_size=128, lr=5e-4, warmup_steps=50,
                                 ema_decay=0.999, checkpoint_every=200, log_every=25, use_text=False),
        sample=SampleConfig(steps=50, guidance=4.0, strategy="top2"),
        # --full trains the monolith for the experts' 3,600 steps at 4 x their batch (64), the same lr.
        baseline=BaselineConfig(protocol="split-batch"),
    )


def run_demo(out: str = "runs/demo", config: RunConfig | None = None, jobs: int = 0,
             images_per_prompt: int = 10) -> dict:
    started = time.perf_counter()
    config = config or demo_config()
    run = RunDir(out)
    jobs = local_jobs(jobs, config.partition.num_clusters)

    if run.exists(layout.manifest()) and run.read_config().data == config.data:
        progress.say(f"prepare: reusing {out}/data")
    else:
        prepare(run, config)
    run.write_config(config)
    if not _partition_matches(run, config):
        partition(run, config.partition)

    k = config.partition.num_clusters
    progress.say(f"training {k} experts as independent processes, {jobs} at a time (logs in {out}/logs)")
    meta = run.read_json(layout.PARTITION_META)
    targets = {e: expert_steps(config, meta, e) for e in range(k)}
    codes = launch_local(run, targets, jobs, log_dir=Path(out) / "logs")
    failed = sorted(e for e, code in codes.items() if code != 0)
    if failed:
        raise ParisError(f"experts {failed} failed (logs in {out}/logs); fix the cause and rerun `paris demo` to resume")
    train_router(run, config)

    progress.say("classifier for prompt adherence, trained on the real Fashion-MNIST train split (cached)")
    test_images, test_labels = fashion_mnist.load(config.data.path, "test")
    classifier = fashion_classifier(config.data.path)
    report = {**sample_strategies(run, config, classifier, images_per_prompt),
              "classifier_test_accuracy": accuracy(classifier, test_images, test_labels),
              "router_accuracy": run.read_json(layout.router_accuracy()),
              "sample": dataclasses.asdict(config.sample),
              "minutes": (time.perf_counter() - started) / 60}
    run.write_json(layout.DEMO_REPORT, report)
    return report


def sample_strategies(run: RunDir, config: RunConfig, classifier, per_class: int) -> dict:
    """`per_class` images of each class with every strategy, scored by the evaluation's own code; a grid per
    strategy (a row per class), and the router's weights over t for one prompt per class (for the chart)."""
    pipe = ParisPipeline.from_run(run.url)
    prompts, classes = demo_prompts(config, per_class)
    rows, grids = {}, {}
    measures = Measures(classifier=classifier, attributes=config.data.captions == "described")
    for strategy in DEMO_STRATEGIES:
        rows[strategy] = sample_and_score(pipe, strategy, prompts, classes, config.sample, config.sample.seed,
                                          len(prompts), measures, keep_images=True)
        grids[strategy] = rows[strategy].pop("images")
        save_image(run, layout.demo_samples(strategy), grid(grids[strategy], len(fashion_mnist.CLASSES),
                                                          fashion_mnist.CLASSES))
    for strategy in DEMO_STRATEGIES:  # mean |pixel difference| in [0, 1] units; 0 where the router is always sure
        rows[strategy]["difference_from_top1"] = (grids[strategy] - grids["top1"]).abs().mean().item() / 2
    weights, times = router_weights(pipe, prompts[::per_class], config.sample)
    return {"strategies": rows, "prompts": prompts[::per_class], "images_per_strategy": len(prompts),
            "router_weights": {"t": times, "weights": weights.tolist()}}


def demo_prompts(config: RunConfig, per_class: int) -> tuple[list[str], torch.Tensor]:
    """`per_class` held-out prompts for each class in class order, with their labels: those of the first test
    images of each class (with described captions, what each image shows in a phrasing no caption used)."""
    real = load_reference(config, 10_000)
    chosen = torch.cat([(real.labels == c).nonzero()[:per_class, 0] for c in range(len(fashion_mnist.CLASSES))])
    return [real.prompts[i] for i in chosen], real.labels[chosen]


def router_weights(pipe: ParisPipeline, prompts: list[str], sample: SampleConfig) -> tuple[torch.Tensor, list[float]]:
    """The router's weights [len(prompts), steps, K] at each step of sampling these prompts with every expert
    (`full`: the weights are the router's probabilities), and the t of each step."""
    _, stats = pipe.generate(prompts, dataclasses.replace(sample, strategy="full", route_every=1, min_weight=0.0),
                             trace=True)
    return stats["routing"], timesteps(sample.steps, sample.shift)[:-1]


def paper_table_config(num_samples: int) -> EvalConfig:
    """What `paris demo --full` measures: made before the demo's minutes of training, so a bad value fails first.
    The mixture's rows come twice: with Paris's router (router/) and with DDM's (router-text/)."""
    mixtures = [*DEMO_STRATEGIES, *(f"{s}@{TEXT_ROUTER}" for s in DEMO_STRATEGIES)]
    return EvalConfig(strategies=",".join(["monolith", *mixtures]), num_samples=num_samples)


def run_paper_table(out: str, config: RunConfig, evaluation: EvalConfig) -> dict:
    """After run_demo: the monolith baseline at matched compute and the router that reads the prompt, then FID,
    adherence and cost per strategy."""
    run = RunDir(out)
    # The experts are done, so the baseline may use every core.
    train_monolith(run, dataclasses.replace(config, expert=dataclasses.replace(config.expert, threads=None)))
    train_router(run, dataclasses.replace(config, router=dataclasses.replace(config.router, use_text=True)),
                 name=TEXT_ROUTER)
    progress.say(f"evaluate: {evaluation.num_samples} images per strategy against as many held-out test images")
    return evaluate_run(out, evaluation)


def _partition_matches(run: RunDir, config: RunConfig) -> bool:
    """Whether the run already holds a partition of its current data with the configured K."""
    if not run.exists(layout.PARTITION_META):
        return False
    meta = run.read_json(layout.PARTITION_META)
    current = run.read_json(layout.manifest())["data_hash"]
    return meta["num_clusters"] == config.partition.num_clusters and meta["data_hash"] == current
