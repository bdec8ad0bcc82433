"""The serving engine without HTTP: batching, per-request seeds, failures that stay with their requests."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from paris.errors import ParisError
from paris.images import to_pil
from paris.inference.pipeline import ParisPipeline
from paris.serve.engine import Engine

REQUESTS = [("a bag", 1), ("a coat", 2), ("a shirt", 3)]


@pytest.fixture(scope="module")
def pipe(three_experts):
    return ParisPipeline.from_pretrained(str(three_experts))


def test_requests_with_the_same_settings_share_a_batch_and_keep_their_own_noise(pipe):
    engine = Engine(pipe, max_batch=16)
    jobs = [engine.submit(prompt, n=2, steps=3, strategy="top2", seed=seed) for prompt, seed in REQUESTS]
    other = engine.submit("a dress", steps=2, strategy="top2", seed=4)  # other steps: never in their batch
    for job in [*jobs, other]:
        job.finished.result(timeout=120)
    assert [job.status for job in [*jobs, other]] == ["done"] * 4
    # The worker takes the first request at once; the two queued behind it while it ran share the next batch.
    assert jobs[1].batch == jobs[2].batch and other.batch not in (jobs[0].batch, jobs[1].batch)
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
    assert engine.queue.qsize() == 0 and engine.batches == 0


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
