"""The one training loop, used for every expert and for the router: AdamW, EMA, checkpoints, resume, logs.

All randomness of step s (which samples, which t, which noise, which captions dropped) comes from a
generator seeded by (seed, s), so a job resumed from a checkpoint continues exactly as if it had never
stopped, with no RNG or data-loader state to save.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import signal
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from paris.config import TrainConfig
from paris.errors import ParisError
from paris.models.io import save_pretrained
from paris.run import RunDir
from paris.train.checkpoint import load_latest, save_checkpoint

console = Console(stderr=True)

# (model, indices of this step's samples, this step's generator) -> scalar loss
LossFn = Callable[[nn.Module, torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class Job:
    name: str  # for messages: "expert 2", "router"
    folder: str  # run-relative output folder: experts/2, router
    model: nn.Module
    loss: LossFn
    num_samples: int  # the batches index range(num_samples)
    identity: dict  # what a checkpoint must match to be resumed (cluster, partition hash, ...)


class EpochBatches:
    """Batch `step` as a pure function of (seed, step): every epoch is a fresh permutation of the samples."""

    def __init__(self, num_samples: int, batch_size: int, seed: int):
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed

    def __call__(self, step: int) -> torch.Tensor:
        positions = torch.arange(step * self.batch_size, (step + 1) * self.batch_size)
        epochs, offsets = positions // self.num_samples, positions % self.num_samples
        return torch.stack([self._permutation(int(e))[int(o)] for e, o in zip(epochs, offsets)])

    @lru_cache(maxsize=2)
    def _permutation(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.num_samples, generator=step_generator(self.seed, epoch))


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def train(run: RunDir, job: Job, cfg: TrainConfig) -> dict:
    """Train `job.model` for cfg.steps steps (resuming if a checkpoint exists); export the EMA to <folder>/final."""
    _check(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model = job.model.train()
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    identity = {**job.identity, "model": dataclasses.asdict(model.config)}
    saved = load_latest(run, job.folder, model, ema, optimizer, identity)
    start = saved["step"] if saved else 0
    if start > cfg.steps:
        raise ParisError(f"{job.name}: its checkpoint is at step {start}, past the {cfg.steps} steps asked for; "
                         f"ask for at least {start} steps or delete {run.url}/{job.folder} to start over")
    if saved:
        console.print(f"{job.name}: resuming from step {start}")
    batches = EpochBatches(job.num_samples, cfg.batch_size, cfg.seed)

    def checkpoint(step: int) -> None:
        save_checkpoint(run, job.folder, step, model, ema, optimizer,
                        {"identity": identity, "config": dataclasses.asdict(cfg), "loss": last_loss},
                        cfg.keep_checkpoints)

    stop = _StopFlag()
    window, last_loss, window_start = [], saved["loss"] if saved else float("nan"), time.perf_counter()
    with stop, _progress(job.name, cfg.steps, start) as (bar, task):
        for step in range(start, cfg.steps):
            generator = step_generator(cfg.seed, step)
            loss = job.loss(model, batches(step), generator)
            if not torch.isfinite(loss):
                raise ParisError(f"{job.name}: loss became {loss.item()} at step {step + 1}; training stopped, "
                                 f"checkpoints made before it are kept under {run.url}/{job.folder}/ckpt (try a lower lr)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
            optimizer.step()
            _update_ema(ema, model, cfg.ema_decay, step)
            window.append(loss.item())
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                elapsed = time.perf_counter() - window_start
                last_loss = sum(window) / len(window)
                record = {"step": done, "loss": last_loss, "lr": optimizer.param_groups[0]["lr"],
                          "grad_norm": float(grad_norm), "samples_per_s": len(window) * cfg.batch_size / elapsed,
                          "time": time.time()}
                run.append_line(f"{job.folder}/metrics.jsonl", json.dumps(record))
                bar.update(task, completed=done, loss=last_loss, rate=record["samples_per_s"])
                if not console.is_terminal:
                    console.print(f"{job.name}: step {done}/{cfg.steps} loss {last_loss:.4f}")
                window, window_start = [], time.perf_counter()
            if done % cfg.checkpoint_every == 0 or done == cfg.steps or stop.requested:
                checkpoint(done)
            if stop.requested:
                raise ParisError(f"{job.name}: stopped by signal at step {done}; checkpoint saved, "
                                 "run the same command again to resume")
    summary = {"steps": cfg.steps, "samples_seen": cfg.steps * cfg.batch_size, "final_loss": last_loss, **job.identity}
    save_pretrained(run, f"{job.folder}/final", ema, info=summary)
    return summary


def _check(cfg: TrainConfig) -> None:
    """Refuse settings that would only fail (or loop forever) after minutes of training."""
    for name in ("batch_size", "checkpoint_every", "keep_checkpoints", "log_every"):
        if getattr(cfg, name) < 1:
            raise ParisError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.steps < 0 or not 0 <= cfg.caption_dropout <= 1:
        raise ParisError(f"need steps >= 0 and 0 <= caption_dropout <= 1, got {cfg.steps} and {cfg.caption_dropout}")


@torch.no_grad()
def _update_ema(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    # Warm-up: a young model's EMA should follow it closely, not average in the random initialisation.
    decay = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1 - decay)


class _StopFlag:
    """Turns SIGTERM/SIGINT (a preemption notice, Ctrl-C) into a checkpoint at the end of the current step."""

    requested = False

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        self.requested = True


class _progress:
    """A rich progress bar (step, loss, samples/s, ETA) that stays quiet when output is not a terminal."""

    def __init__(self, name: str, total: int, start: int):
        self.bar = Progress(
            TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[rate]:.0f} samples/s"),
            TimeRemainingColumn(), console=console, disable=not console.is_terminal,
        )
        self.task = self.bar.add_task(name, total=total, completed=start, loss=float("nan"), rate=0.0)

    def __enter__(self):
        self.bar.__enter__()
        return self.bar, self.task

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)
