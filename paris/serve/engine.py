"""The serving engine: requests wait in a queue and are sampled in batches on one device.

One worker thread owns the pipeline: its experts live on one device, at most `max_resident_experts` of them.
Web handlers only submit and wait. Requests that share every sampling setting but the seed (strategy, steps,
guidance, guidance mode, route_every) run as one batch of at most `max_batch` images. Each request keeps
the noise its own seed gives, drawn as ParisPipeline draws it, so its images do not depend on what it was
batched with (except under sample-k, whose random draws a batch shares). Each request's way through (queued,
every step of its batch, done or failed) goes to the `paris.serve` logger at debug level.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from paris.config import SampleConfig
from paris.errors import ParisError
from paris.images import to_pil
from paris.inference.pipeline import ParisPipeline
from paris.inference.routing import parse_strategy
from paris.inference.sampler import generate, initial_noise

log = logging.getLogger("paris.serve")
KEPT_JOBS = 256  # finished jobs kept for their images and status, newest last


@dataclass
class Job:
    prompts: list[str]  # one per image
    sample: SampleConfig
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    status: str = "queued"  # queued, running, done, failed
    step: int = 0  # sampling steps done
    submitted: float = field(default_factory=time.time)
    seconds: float = 0.0  # sampling time of the batch it ran in
    batch: int = 0  # which batch of the engine it ran in (1, 2, ...)
    batch_images: int = 0  # images of that batch, its own and other requests': all sampled together
    images: list[bytes] = field(default_factory=list)  # PNG
    routing: list[list[list[float]]] = field(default_factory=list)  # per image: [evaluation][expert] weights
    error: str | None = None
    finished: Future = field(default_factory=Future)

    def summary(self) -> dict:
        """What a client sees of the job (no image bytes)."""
        done = self.status == "done"
        return {"id": self.id, "status": self.status, "step": self.step, "steps": self.sample.steps,
                "prompts": self.prompts, "seconds": round(self.seconds, 3), "batch_images": self.batch_images,
                "seconds_per_image": round(self.seconds / self.batch_images, 3) if self.batch_images else None,
                "error": self.error,
                "images": [f"/images/{self.id}/{i}.png" for i in range(len(self.images))] if done else [],
                "routing": self.routing, "experts_used": [used_experts(r) for r in self.routing],
                "expert_passes": [passes(r) for r in self.routing]}


def used_experts(routing: list[list[float]]) -> list[int]:
    """The experts an image's sampling ran (a non-zero weight at some evaluation)."""
    return sorted({k for weights in routing for k, w in enumerate(weights) if w > 0})


def passes(routing: list[list[float]]) -> int:
    """Expert passes spent on one image: one per expert with a non-zero weight, per evaluation."""
    return sum(1 for weights in routing for w in weights if w > 0)


class Engine:
    def __init__(self, pipe: ParisPipeline, max_batch: int = 16, max_steps: int = 200, max_images: int = 10):
        self.pipe, self.max_batch, self.max_steps, self.max_images = pipe, max_batch, max_steps, max_images
        self.queue: queue.Queue[Job] = queue.Queue()
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.lock = threading.Lock()
        self.batches = 0  # sampling batches run, for the load benchmark
        self.worker = threading.Thread(target=self._work, name="paris-engine", daemon=True)
        self.worker.start()

    @property
    def num_experts(self) -> int:
        return len(self.pipe.mixture.experts)

    def submit(self, prompt: str | list[str], n: int = 1, **settings) -> Job:
        """Queue a request: `n` images of each prompt, with sampling settings by SampleConfig's names (the
        pipeline's own for any left out). A bad request is a ParisError that says what to change."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ParisError("prompt must be a non-empty string")
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n * len(prompts) <= self.max_images:
            raise ParisError(f"n must be an integer from 1 to {self.max_images // len(prompts)} (at most "
                             f"{self.max_images} images per request), got {n!r}")
        given = {key: value for key, value in settings.items() if value is not None}
        if isinstance(given.get("strategy"), str):  # first: an oracle:E beyond the experts, top3 of 2, a typo
            parse_strategy(given["strategy"], self.num_experts, self.pipe.mixture.retired)
        sample = self.pipe.sample.updated("", **given)
        if sample.steps > self.max_steps:
            raise ParisError(f"steps must be at most {self.max_steps} on this server, got {sample.steps}")
        job = Job([p for p in prompts for _ in range(n)], sample)
        with self.lock:
            self.jobs[job.id] = job
            while len(self.jobs) > KEPT_JOBS:
                self.jobs.popitem(last=False)
        self.queue.put(job)
        log.debug("job %s queued: %d image(s), %s, %d steps, seed %d", job.id, len(job.prompts), sample.strategy,
                  sample.steps, sample.seed)
        return job

    def get(self, job_id: str) -> Job | None:
        with self.lock:
            return self.jobs.get(job_id)

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                self._run(batch)
            except Exception as e:  # a failed batch fails its jobs, never the server
                log.debug("batch of jobs %s failed: %s: %s", _ids(batch), type(e).__name__, e)
                for job in batch:
                    if not job.finished.done():
                        job.status, job.error = "failed", f"{type(e).__name__}: {e}"
                        job.finished.set_result(job)

    def _next_batch(self) -> list[Job]:
        """The oldest waiting job, and the waiting jobs that can share its sampling loop."""
        first = self.queue.get()
        batch, kept = [first], []
        key = _batch_key(first.sample)
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
            fits = sum(len(j.prompts) for j in batch) + len(job.prompts) <= self.max_batch
            (batch if fits and _batch_key(job.sample) == key else kept).append(job)
        for job in kept:  # back in the queue, in their order, for the next batch
            self.queue.put(job)
        return batch

    @torch.no_grad()
    def _run(self, batch: list[Job]) -> None:
        mixture, sample = self.pipe.mixture, batch[0].sample
        noise = torch.cat([initial_noise(mixture, len(job.prompts), torch.Generator().manual_seed(job.sample.seed))
                           for job in batch])
        prompts = [p for job in batch for p in job.prompts]
        for job in batch:
            job.status = "running"
        number = self.batches + 1  # counted once sampled: a failed batch is not one of engine.batches
        ids = _ids(batch)  # once: the step log below runs at every step, logged or not
        log.debug("batch %d: jobs %s, %d images", number, ids, len(prompts))

        def progress(step: int) -> None:
            for job in batch:
                job.step = step
            log.debug("batch %d (jobs %s): step %d/%d", number, ids, step, sample.steps)

        start = time.perf_counter()
        # sample is the first job's: its seed seeds the batch's stochastic routing; the noise is each job's own
        images, stats = generate(mixture, prompts, sample, trace=True, noise=noise, on_step=progress)
        seconds = time.perf_counter() - start
        self.batches += 1
        first = 0
        for job in batch:
            job.batch = self.batches
            rows = range(first, first + len(job.prompts))
            job.images = [_png(images[i]) for i in rows]
            job.routing = [stats["routing"][i].tolist() for i in rows]
            job.seconds, job.batch_images, job.status = seconds, len(prompts), "done"
            first += len(job.prompts)
            log.debug("job %s done: its %d images in batch %d of %d images, %.2f s (%.3f s per image)", job.id,
                      len(job.prompts), job.batch, len(prompts), seconds, seconds / len(prompts))
            job.finished.set_result(job)


def _ids(batch: list[Job]) -> str:
    return ", ".join(job.id for job in batch)


def _batch_key(sample: SampleConfig) -> tuple:
    """Jobs whose settings differ only in the seed share a batch (each keeps its own noise)."""
    return dataclasses.astuple(dataclasses.replace(sample, seed=0))


def _png(image: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return buffer.getvalue()
