"""The serving engine: requests wait in a queue and are sampled in batches on one device.

One worker thread owns the pipeline: its experts live on one device, at most `max_resident_experts` of them.
Web handlers only submit and wait. Requests that share every sampling setting but the seed (strategy, steps,
guidance, guidance mode, route_every) run as one batch of at most `max_batch` images. Each request keeps
the noise its own seed gives, drawn as ParisPipeline draws it, so its images do not depend on what it was
batched with (except under sample-k, whose random draws a batch shares). Each request's way through (queued,
every step of its batch, done or failed) goes to the `paris.serve` logger at debug level.

Abuse stays with the request that brings it: every value is checked before a job queues (prompts by
paris.prompts, sampling settings by SampleConfig, n and steps against the server's limits); a batch that fails
anyway is sampled again job by job, so that only the job at fault fails; the queue holds at most `max_queue`
jobs (QueueFull beyond: the HTTP API's 429); a job nobody waits for is cancelled, and only finished jobs are
ever dropped from the table that answers polls.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from paris.config import SampleConfig
from paris.errors import ParisError, shown
from paris.images import to_pil
from paris.inference.lora_experts import check_strengths
from paris.inference.pipeline import ParisPipeline
from paris.inference.routing import parse_strategy
from paris.inference.sampler import generate, initial_noise
from paris.prompts import prompt_list

log = logging.getLogger("paris.serve")
KEPT_JOBS = 256  # finished jobs kept for their images and status; queued and running ones are always kept


@dataclass(eq=False)  # a job is itself: compared and found in lists by identity
class Job:
    prompts: list[str]  # one per image
    sample: SampleConfig
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    status: str = "queued"  # queued, running, then done, failed or cancelled
    step: int = 0  # sampling steps done
    submitted: float = field(default_factory=time.time)
    seconds: float = 0.0  # sampling time of the batch it ran in
    batch: int = 0  # which batch of the engine it ran in (1, 2, ...)
    batch_images: int = 0  # images of that batch, its own and other requests': all sampled together
    images: list[bytes] = field(default_factory=list)  # PNG
    routing: list[list[list[float]]] = field(default_factory=list)  # per image: [evaluation][expert] weights
    error: str | None = None
    cancelled: bool = False  # nobody waits for its images any more (its client went away)
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


class QueueFull(Exception):
    """The queue holds its most jobs: the request may come back after `retry_after` seconds."""

    def __init__(self, waiting: int, retry_after: int):
        super().__init__(f"the server is busy: {waiting} requests are waiting; try again in {retry_after} s")
        self.retry_after = retry_after


class Cancelled(Exception):
    """Raised between steps when every job of a batch was cancelled: nobody waits for its images."""


class Engine:
    def __init__(self, pipe: ParisPipeline, max_batch: int = 16, max_steps: int = 200, max_images: int = 10,
                 max_queue: int = 64, max_prompt_chars: int = 4000):
        self.pipe, self.max_batch, self.max_steps, self.max_images = pipe, max_batch, max_steps, max_images
        self.max_queue, self.max_prompt_chars = max_queue, max_prompt_chars
        self.waiting: list[Job] = []  # queued, oldest first
        self.jobs: dict[str, Job] = {}  # every queued, running and kept finished job, by id
        self.finished_ids: deque[str] = deque()  # finished jobs, oldest first: only these are ever dropped
        self.changed = threading.Condition()  # guards the three above; notified when a job is queued
        self.batches = 0  # sampling batches run, for the load benchmark
        self.last_batch_seconds = 1.0  # what a Retry-After is guessed from
        self.logged_resident_bytes = 0  # the experts' resident bytes last logged: a line each time they grow
        self.worker = threading.Thread(target=self._work, name="paris-engine", daemon=True)
        self.worker.start()

    @property
    def num_experts(self) -> int:
        return len(self.pipe.mixture.experts)

    def submit(self, prompt: str | list[str], n: int = 1, **settings) -> Job:
        """Queue a request: `n` images of each prompt, with sampling settings by SampleConfig's names (the
        pipeline's own for any left out). A bad request is a ParisError that says what to change; a full queue
        is QueueFull."""
        prompts = prompt_list(prompt, self.max_prompt_chars, blank=False)
        if len(prompts) > self.max_images:
            raise ParisError(f"{len(prompts):,} prompts are too many: this server draws at most {self.max_images} "
                             "images per request", "prompt")
        if type(n) is not int or not 1 <= n * len(prompts) <= self.max_images:
            raise ParisError(f"n must be an integer from 1 to {self.max_images // len(prompts)} (at most "
                             f"{self.max_images} images per request), got {shown(n)}", "n")
        given = {key: value for key, value in settings.items() if value is not None}
        if isinstance(given.get("strategy"), str):  # first: an oracle:E beyond the experts, top3 of 2, a typo
            try:
                parse_strategy(given["strategy"], self.num_experts, self.pipe.mixture.retired)
            except ParisError as e:
                raise ParisError(str(e), "strategy") from None
        sample = self.pipe.sample.updated("", **given)
        check_strengths(sample.lora_scale, self.num_experts, self.pipe.mixture.lora_experts)  # before it is queued
        if sample.quantize != self.pipe.sample.quantize:  # a request's own would reload every expert for its batch
            raise ParisError(f"quantize is set for the whole server ({self.pipe.sample.quantize}, by paris serve "
                             "--quantize); a request cannot change it", "quantize")
        if sample.steps > self.max_steps:
            raise ParisError(f"steps must be at most {self.max_steps} on this server, got {sample.steps}", "steps")
        job = Job([p for p in prompts for _ in range(n)], sample)
        self.enqueue(job)
        log.debug("job %s queued: %d image(s), %s, %d steps, seed %d", job.id, len(job.prompts), sample.strategy,
                  sample.steps, sample.seed)
        return job

    def enqueue(self, job: Job) -> None:
        """Queue a checked job, or raise QueueFull."""
        with self.changed:
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(len(self.waiting), math.ceil(self.last_batch_seconds * len(self.waiting)
                                                             / max(1, self.max_batch)))
            self.jobs[job.id] = job
            self.waiting.append(job)
            self.changed.notify()

    def get(self, job_id: str) -> Job | None:
        with self.changed:
            return self.jobs.get(job_id)

    def cancel(self, job: Job) -> None:
        """Nobody waits for this job's images any more: a queued job leaves the queue; a running one stops its
        batch between two steps when every job of the batch is cancelled (a batch's rows are sampled together,
        so one job's are not dropped while the others need theirs: they are thrown away at the end)."""
        job.cancelled = True
        with self.changed:
            if job in self.waiting:
                self.waiting.remove(job)
                self._finish(job, "cancelled")

    def _finish(self, job: Job, status: str, error: str | None = None) -> None:
        """Mark a job finished, keep it for its images and status, and drop the oldest finished ones beyond
        KEPT_JOBS (a queued or running job is never dropped)."""
        job.status, job.error = status, error
        if status == "cancelled":
            log.debug("job %s cancelled at step %d of %d", job.id, job.step, job.sample.steps)
        with self.changed:
            self.finished_ids.append(job.id)
            while len(self.finished_ids) > KEPT_JOBS:
                self.jobs.pop(self.finished_ids.popleft(), None)
        job.finished.set_result(job)

    def _work(self) -> None:
        while True:
            self._sample(self._next_batch())

    def _sample(self, batch: list[Job]) -> None:
        """Sample a batch; if it fails, sample each of its jobs alone, so that one bad job fails only itself."""
        try:
            self._run(batch)
        except Cancelled:
            log.debug("batch of jobs %s stopped: every job was cancelled", _ids(batch))
            for job in batch:
                self._finish(job, "cancelled")
        except Exception as e:  # a failed batch fails its jobs, never the server
            log.debug("batch of jobs %s failed: %s: %s", _ids(batch), type(e).__name__, e)
            for job in [job for job in batch if not job.finished.done()]:
                if len(batch) > 1:
                    self._sample([job])
                else:
                    self._finish(job, "failed", f"{type(e).__name__}: {e}")

    def _next_batch(self) -> list[Job]:
        """The oldest waiting job, and the waiting jobs that can share its sampling loop."""
        with self.changed:
            while not self.waiting:
                self.changed.wait()
            first = self.waiting[0]
            batch, images, key = [], 0, _batch_key(first.sample)
            for job in self.waiting:
                if job is first or (_batch_key(job.sample) == key and images + len(job.prompts) <= self.max_batch):
                    batch.append(job)
                    images += len(job.prompts)
            self.waiting = [job for job in self.waiting if job not in batch]
            for job in batch:
                job.status = "running"
            return batch

    @torch.no_grad()
    def _run(self, batch: list[Job]) -> None:
        mixture, sample = self.pipe.mixture, batch[0].sample
        noise = torch.cat([initial_noise(mixture, len(job.prompts), torch.Generator().manual_seed(job.sample.seed))
                           for job in batch])
        prompts = [p for job in batch for p in job.prompts]
        number = self.batches + 1  # counted once sampled: a failed batch is not one of engine.batches
        ids = _ids(batch)  # once: the step log below runs at every step, logged or not
        log.debug("batch %d: jobs %s, %d images", number, ids, len(prompts))

        def progress(step: int) -> None:
            for job in batch:
                job.step = step
            if all(job.cancelled for job in batch):
                raise Cancelled
            log.debug("batch %d (jobs %s): step %d/%d", number, ids, step, sample.steps)

        start = time.perf_counter()
        # sample is the first job's: its seed seeds the batch's stochastic routing; the noise is each job's own
        images, stats = generate(mixture, prompts, sample, trace=True, noise=noise, on_step=progress)
        seconds = self.last_batch_seconds = time.perf_counter() - start
        self.batches += 1
        self._log_resident_bytes(stats["resident_expert_bytes"])
        first = 0
        for job in batch:
            rows = range(first, first + len(job.prompts))
            first += len(job.prompts)
            job.batch, job.seconds, job.batch_images = self.batches, seconds, len(prompts)
            if job.cancelled:  # its rows were sampled for the others' sake; nobody wants them
                self._finish(job, "cancelled")
                continue
            job.images = [_png(images[i]) for i in rows]
            job.routing = [stats["routing"][i].tolist() for i in rows]
            log.debug("job %s done: its %d images in batch %d of %d images, %.2f s (%.3f s per image)", job.id,
                      len(job.prompts), job.batch, len(prompts), seconds, seconds / len(prompts))
            self._finish(job, "done")

    def _log_resident_bytes(self, peak: int) -> None:
        """One info line each time the experts resident on the device hold more than ever before."""
        if peak > self.logged_resident_bytes:
            self.logged_resident_bytes = peak
            pool = self.pipe.mixture.experts
            log.info("experts resident: %.1f MiB at most, %d of %d experts loaded (quantize %s)", peak / 2**20,
                     len(pool.resident), len(pool), pool.quantize)


def _ids(batch: list[Job]) -> str:
    return ", ".join(job.id for job in batch)


def _batch_key(sample: SampleConfig) -> tuple:
    """Jobs whose settings differ only in the seed share a batch (each keeps its own noise)."""
    return dataclasses.astuple(dataclasses.replace(sample, seed=0))


def _png(image: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return buffer.getvalue()
