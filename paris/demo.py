"""`paris demo`: the whole pipeline on Fashion-MNIST in pixel space, on a CPU, in minutes.

prepare -> partition (K=4) -> 4 experts as independent processes -> router -> sample with every strategy
-> a table of seconds per image and prompt adherence, grids, loss curves and report.json under the run.
With --full it then trains the one-model baseline at matched compute and writes the paper's table
(`paris evaluate`: FID, adherence and cost of monolith, top-1, top-2 and full) to RUN/eval/.
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
from paris.config import (BaselineConfig, DataConfig, EvalConfig, PartitionConfig, RouterTrainConfig, RunConfig,
                          SampleConfig, TrainConfig)
from paris.data import fashion_mnist
from paris.data.prepare import prepare
from paris.errors import ParisError
from paris.evaluate.adherence import accuracy, fashion_classifier
from paris.evaluate.table import Measures, evaluate_run, sample_and_score
from paris.images import grid, save_png
from paris.launch.local import launch_local, local_jobs
from paris.run import RunDir
from paris.pipeline import ParisPipeline
from paris.train.expert import expert_steps, train_monolith
from paris.train.router import train_router

DEMO_STRATEGIES = ("top1", "top2", "full")


def demo_config(data: str = DataConfig.path) -> RunConfig:
    """Small enough for 2 CPU cores: a 1.3M-parameter expert per cluster, 4 clusters, pixel space.

    The recipe is what benchmarks/quality_vs_compute.py measured best at this size: clusters of the captions'
    text embeddings (c-BTM), DDM's router, which reads the prompt, and DDM's split-batch protocol with each
    expert at lr 2e-3 (5e-4 trained every batch size far below its best), falling to 0 over the last 20% of the
    steps (the cooldown took about 5 FID points off both the monolith and the mixture at twice the demo's budget)."""
    return RunConfig(
        data=DataConfig(path=data, features="text"),
        partition=PartitionConfig(num_clusters=4),
        expert=TrainConfig(preset="tiny", steps=3600, batch_size=16, lr=2e-3, warmup_steps=100, cooldown=0.2,
                           ema_decay=0.999, checkpoint_every=500, log_every=50, threads=1, preview_every=1200,
                           preview_prompts=[fashion_mnist.class_prompt(c) for c in range(10)]),  # one per class
        # With the prompt to read, the router is sure of its cluster within a few hundred steps at every t.
        router=RouterTrainConfig(preset="tiny", epochs=0.5, batch_size=128, lr=5e-4, warmup_steps=50,
                                 ema_decay=0.999, checkpoint_every=200, log_every=25, use_text=True),
        sample=SampleConfig(steps=50, guidance=4.0),
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
    classifier_accuracy = accuracy(classifier, test_images, test_labels)

    pipe = ParisPipeline.from_run(out)
    classes = torch.arange(len(fashion_mnist.CLASSES)).repeat_interleave(images_per_prompt)
    prompts = [fashion_mnist.class_prompt(int(c)) for c in classes]
    results = {}
    for strategy in DEMO_STRATEGIES:  # the evaluation's own sampling and scoring, on 10 prompts per class
        row = sample_and_score(pipe, strategy, prompts, classes, config.sample, config.sample.seed, len(prompts),
                               Measures(classifier=classifier), keep_images=True)
        images = row.pop("images")
        results[strategy] = row
        save_png(run, layout.demo_samples(strategy), grid(images, len(fashion_mnist.CLASSES), fashion_mnist.CLASSES))

    report = {
        "strategies": results,
        "classifier_test_accuracy": classifier_accuracy,
        "router_accuracy": run.read_json(layout.ROUTER_ACCURACY),
        "images_per_strategy": len(prompts),
        "sample": dataclasses.asdict(config.sample),
        "minutes": (time.perf_counter() - started) / 60,
    }
    run.write_json(layout.DEMO_REPORT, report)
    return report


def paper_table_config(num_samples: int) -> EvalConfig:
    """What `paris demo --full` measures: made before the demo's minutes of training, so a bad value fails first."""
    return EvalConfig(strategies=",".join(["monolith", *DEMO_STRATEGIES]), num_samples=num_samples)


def run_paper_table(out: str, config: RunConfig, evaluation: EvalConfig) -> dict:
    """After run_demo: the monolith baseline at matched compute, then FID, adherence and cost per strategy."""
    # The experts are done, so the baseline may use every core.
    train_monolith(RunDir(out), dataclasses.replace(config, expert=dataclasses.replace(config.expert, threads=None)))
    progress.say(f"evaluate: {evaluation.num_samples} images per strategy against as many held-out test images")
    return evaluate_run(out, evaluation)


def _partition_matches(run: RunDir, config: RunConfig) -> bool:
    """Whether the run already holds a partition of its current data with the configured K."""
    if not run.exists(layout.PARTITION_META):
        return False
    meta = run.read_json(layout.PARTITION_META)
    current = run.read_json(layout.manifest())["data_hash"]
    return meta["num_clusters"] == config.partition.num_clusters and meta["data_hash"] == current
