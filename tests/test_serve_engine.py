"""The serving engine without HTTP: batching, per-request seeds, failures that stay with their requests, a bounded
queue whose jobs are never dropped, and cancelled jobs."""

from __future__ import annotations

import dataclasses
import io
import time

import numpy as np
import pytest
from PIL import Image

from paris.errors import ParisError
from paris.images import to_pil
from paris.inference.pipeline import ParisPipeline
from paris.serve.engine import KEPT_JOBS, Engine, Job, QueueFull

REQUESTS = [("a bag", 1), ("a coat", 2), ("a shirt", 3)]


@pytest.fixture(scope="module")
def pipe(three_experts):
    return ParisPipeline.from_pretrained(str(three_experts))


def test_requests_with_the_same_settings_share_a_batch_and_keep_their_own_noise(pipe):
    engine = Engine(pipe, max_batch=16)
    with engine.changed:  # the worker waits until all four are queued
        jobs = [engine.submit(prompt, n=2, steps=3, strategy="top2", seed=seed) for prompt, seed in REQUESTS]
        other = engine.submit("a dress", steps=2, strategy="top2", seed=4)  # other steps: never in their batch
    for job in [*jobs, other]:
        job.finished.result(timeout=120)
    assert [job.status for job in [*jobs, other]] == ["done"] * 4
    assert jobs[0].batch == jobs[1].batch == jobs[2].batch != other.batch and jobs[0].batch_images == 6
    for job, (prompt, seed) in zip(jobs, REQUESTS):
        alone, _ = pipe.generate([prompt] * 2, steps=3, strategy="top2", seed=seed)
        assert [len(routing) for routing in job.routing] == [3, 3]
        assert all(np.array_equal(np.asarray(Image.open(io.BytesIO(png))), np.asarray(to_pil(image)))
                   for png, image in zip(job.images, alone))


def test_a_batch_is_never_larger_than_max_batch(pipe):
    engine = Engine(pipe, max_batch=2)
    jobs = [engine.submit("a bag", n=2, steps=2, seed=s) for s in range(3)]
    for job in jobs:
        job.finished.result(timeout=120)
    assert len({job.batch for job in jobs}) == 3


def test_bad_requests_are_refused_before_they_queue(pipe):
    engine = Engine(pipe, max_steps=10, max_images=4)
    for request, needle in [(dict(prompt="  "), "non-empty"), (dict(prompt="a", n=5), "at most 4 images"),
                            (dict(prompt="a", steps=11), "at most 10"), (dict(prompt="a", strategy="oracle:7"), "oracle"),
                            (dict(prompt="a", guidance=-1.0), "guidance")]:
        with pytest.raises(ParisError, match=needle):
            engine.submit(**request)
    assert engine.waiting == [] and engine.jobs == {} and engine.batches == 0


def test_a_failing_batch_fails_its_requests_and_the_engine_goes_on(pipe, monkeypatch):
    engine = Engine(pipe)
    monkeypatch.setattr(pipe.mixture.experts, "loaders", [lambda: 1 / 0] * 3)  # every expert unreadable
    pipe.mixture.experts.resident.clear()
    broken = engine.submit("a bag", steps=1, strategy="oracle:1")
    broken.finished.result(timeout=120)
    monkeypatch.undo()
    fine = engine.submit("a bag", steps=1)
    fine.finished.result(timeout=120)
    assert broken.status == "failed" and "ZeroDivisionError" in broken.error and fine.status == "done"


def test_a_bad_job_batched_with_a_good_one_fails_alone_and_the_good_one_gets_its_images(pipe):
    engine = Engine(pipe)
    bad = Job(["a bag"], dataclasses.replace(pipe.sample, steps=2, seed=2**70))  # past the checks: a seed torch refuses
    with engine.changed:  # both queued before the worker looks: one batch
        engine.enqueue(bad)
        good = engine.submit("a coat", steps=2, seed=3)
    good.finished.result(timeout=120)
    bad.finished.result(timeout=120)
    alone, _ = pipe.generate(["a coat"], steps=2, seed=3)
    assert bad.status == "failed" and "Overflow" in bad.error and good.status == "done"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(good.images[0]))), np.asarray(to_pil(alone[0])))


def test_queued_jobs_are_never_dropped_and_finished_ones_are_kept_up_to_a_limit(pipe):
    engine = Engine(pipe, max_queue=KEPT_JOBS + 20)
    with engine.changed:  # all queued at once: more than the finished jobs kept
        jobs = [engine.submit("a bag", steps=1, seed=s) for s in range(KEPT_JOBS + 20)]
        assert all(engine.get(job.id) is job for job in jobs)
        with pytest.raises(QueueFull) as full:
            engine.submit("a bag", steps=1)
    assert full.value.retry_after >= 1 and "requests are waiting" in str(full.value)
    for job in jobs:
        job.finished.result(timeout=120)
    assert [engine.get(job.id) for job in jobs] == [None] * 20 + jobs[20:]  # the oldest finished are dropped


def test_a_cancelled_job_leaves_the_queue_and_a_batch_stops_when_all_its_jobs_are_cancelled(pipe):
    engine = Engine(pipe, max_steps=200)
    with engine.changed:
        running = engine.submit("a bag", steps=30)
        kept = engine.submit("a coat", steps=30, seed=1)  # its batch mate: sampled to the end
        queued = engine.submit("a shirt", steps=1)  # other steps: the next batch
        engine.cancel(queued)
    assert queued.finished.done() and queued.status == "cancelled" and engine.waiting == [running, kept]
    while running.step == 0:
        time.sleep(0.01)
    engine.cancel(running)
    kept.finished.result(timeout=120)
    assert running.status == "cancelled" and running.images == [] and kept.status == "done" and kept.step == 30
    alone = engine.submit("a dress", steps=200)
    while alone.step == 0:
        time.sleep(0.01)
    engine.cancel(alone)
    alone.finished.result(timeout=120)
    assert alone.status == "cancelled" and alone.step < 200 and engine.batches == 1  # stopped: not a batch sampled
