"""The one training loop, used for every expert and for the router.

One step = one global batch of `batch_size` samples, whatever the hardware: under torchrun each of the W
processes takes batch_size / W of them, in micro-batches of `micro_batch_size` with gradient accumulation.
AdamW with fp32 master weights, bf16 autocast on GPU, torch.compile where it pays (paris.train.compiling), EMA,
grad-norm clipping, checkpoints (every N steps and on SIGTERM/SIGINT), automatic resume, metrics. Randomness
comes from paris.randomness, so a resumed job and a job on other hardware follow the very same optimisation.

    python -m paris train-expert RUN --expert 0                              # one CPU or GPU
    torchrun --nproc-per-node=8 -m paris train-expert RUN --expert 0         # 8 GPUs, same result
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import signal
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from paris import layout, precision, progress
from paris.config import TrainConfig
from paris.data.store import Store
from paris.errors import ParisError
from paris.models.io import save_pretrained
from paris.randomness import SampleRandom, ShardWindowBatches
from paris.run import RunDir
from paris.train import compiling, distributed
from paris.train.checkpoint import load_latest, save_checkpoint
from paris.train.lease import Lease
from paris.train.metrics import MetricsLog

# (model, indices into the job's Store of this micro-batch, their random draws, device) -> mean loss of the micro-batch
LossFn = Callable[[nn.Module, torch.Tensor, SampleRandom, torch.device], torch.Tensor]


@dataclass
class Job:
    name: str  # for messages: "expert 2", "router"
    folder: str  # run-relative output folder: experts/2, router
    model: nn.Module
    loss: LossFn
    data: Store  # the samples it trains on (the loop asks it for their order and to read ahead); the loss reads them
    identity: dict  # what a checkpoint must match to be resumed (cluster, partition hash, ...)
    preview: Callable | None = None  # preview(ema, step, metrics) every `preview_every` steps (paris.train.preview)
    preview_every: int | None = None
    export: Callable = save_pretrained  # (run, folder, EMA model, manifest): writes <folder>/final


def train(run: RunDir, job: Job, cfg: TrainConfig) -> dict:
    """Train for cfg.steps steps (resuming if a checkpoint exists); rank 0 exports the EMA to <folder>/final.
    The job holds its folder's lease throughout: a second job on the same folder is refused."""
    dist = distributed.setup()
    with _sole_job(run, job, dist) as lease:
        return _train(run, job, cfg, dist, lease)


@contextlib.contextmanager
def _sole_job(run: RunDir, job: Job, dist: distributed.Distributed):
    """Rank 0 takes the folder's lease (every rank stops if it cannot) and lets go when training ends, however."""
    lease, refused = Lease(run, job.folder, job.name), None
    if dist.is_main:
        try:
            lease.acquire()
        except ParisError as e:
            refused = e
    if dist.any(refused is not None):
        raise refused or ParisError(f"{job.name}: another job holds {run.url}/{job.folder}/LEASE")
    try:
        yield lease
    finally:
        if dist.is_main:
            lease.release()


@dataclass
class _Training:
    """What every step of a job shares, built once by _set_up."""
    run: RunDir
    job: Job
    cfg: TrainConfig
    dist: distributed.Distributed
    model: nn.Module
    ema: nn.Module
    optimizer: torch.optim.Optimizer
    identity: dict  # what the checkpoints record, for a resume to match
    forward: nn.Module  # the model as each micro-batch calls it: wrapped by DDP and torch.compile where they apply
    compiled: bool
    autocast: torch.autocast
    batches: ShardWindowBatches
    positions: torch.Tensor  # this process's share of every global batch
    micro: int  # samples per micro-batch
    accumulation: int  # micro-batches per step
    start: int  # the first step to take: 0, or where the checkpoint resumed stopped
    last_loss: float  # the mean loss of the last logged window: what the checkpoint and summary record
    metrics: MetricsLog | None  # rank 0 only
    # Listed once: walking the module tree for them every step costs more than the optimiser at small batches.
    params: list[torch.Tensor] = dataclasses.field(init=False)
    ema_params: list[torch.Tensor] = dataclasses.field(init=False)

    def __post_init__(self):
        # The parameters that train (a LoRA's adapter, or all) and their EMA twins: frozen ones never change.
        pairs = [(p, e) for p, e in zip(self.model.parameters(), self.ema.parameters()) if p.requires_grad]
        self.params, self.ema_params = [p for p, _ in pairs], [e for _, e in pairs]


def _train(run: RunDir, job: Job, cfg: TrainConfig, dist: distributed.Distributed, lease: Lease) -> dict:
    training = _set_up(run, job, cfg, dist)
    stop = _StopFlag()
    losses, window_start = [], time.perf_counter()
    with stop, progress.bar(job.name, cfg.steps, training.start, show=dist.is_main) as bar:
        for step in range(training.start, cfg.steps):
            if dist.is_main:
                lease.renew()
            step_loss, grad_norm, lr = _step(training, step)
            losses.append(step_loss)
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                training.last_loss = sum(losses) / len(losses)
                rate = len(losses) * cfg.batch_size / (time.perf_counter() - window_start)
                if dist.is_main:
                    training.metrics.log({"step": done, "loss": training.last_loss, "lr": lr,
                                          "grad_norm": float(grad_norm), "samples_per_s": rate, "time": time.time()})
                    bar.update(done, loss=f"{training.last_loss:.4f}", **{"samples/s": f"{rate:.0f}"})
                losses, window_start = [], time.perf_counter()
            # Before the step's checkpoint: a resume never skips one.
            if job.preview is not None and done % job.preview_every == 0 and dist.is_main:
                job.preview(training.ema, done, training.metrics)
            stopping = dist.any(stop.requested)
            if done % cfg.checkpoint_every == 0 or done == cfg.steps or stopping:
                _checkpoint(training, done)
            if stopping:
                dist.barrier()
                raise ParisError(f"{job.name}: stopped by signal at step {done}; checkpoint saved, "
                                 "run the same command again to resume")
    return _finish(training)


def _set_up(run: RunDir, job: Job, cfg: TrainConfig, dist: distributed.Distributed) -> _Training:
    """The model, its EMA and optimiser on this process's device, restored from the job's newest checkpoint if
    there is one, and the forward compiled or not: everything the steps share."""
    micro, accumulation = micro_batches(cfg, dist.world_size)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if dist.is_main:
        progress.say(f"{job.name}: on {dist.device}, {torch.get_num_threads()} CPU threads"
                     + (f" per process, {dist.world_size} processes" if dist.world_size > 1 else ""))
    if dist.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    model = job.model.to(dist.device).train()
    model.gradient_checkpointing = cfg.gradient_checkpointing
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    # The fused kernel on every device (CPU too): one pass over all parameters instead of one per tensor.
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    identity = {**job.identity, "model": dataclasses.asdict(model.architecture), "batch_size": cfg.batch_size,
                "seed": cfg.seed}
    saved, start = _resume(run, job, cfg, dist, model, ema, optimizer, identity)
    forward = DistributedDataParallel(model) if dist.world_size > 1 else model
    autocast = precision.autocast(cfg.precision, dist.device)
    batches = job.data.batches(cfg.batch_size, cfg.seed, cfg.shuffle_buffer)
    positions = torch.arange(dist.rank * micro * accumulation, (dist.rank + 1) * micro * accumulation)
    forward, compiled = _compiled_or_eager(job, cfg, model, forward, dist, saved, start, positions[:micro], autocast,
                                           batches)
    metrics = (MetricsLog(run, job.folder, cfg.tensorboard, cfg.wandb, {**dataclasses.asdict(cfg), **job.identity})
               if dist.is_main else None)
    return _Training(run, job, cfg, dist, model, ema, optimizer, identity, forward, compiled, autocast, batches,
                     positions, micro, accumulation, start, saved["loss"] if saved else float("nan"), metrics)


def _resume(run: RunDir, job: Job, cfg: TrainConfig, dist: distributed.Distributed, model: nn.Module,
            ema: nn.Module, optimizer: torch.optim.Optimizer, identity: dict) -> tuple[dict | None, int]:
    """The job's newest checkpoint restored into model, EMA and optimiser (its state, or None), and the step to
    start from; a checkpoint past the steps asked for is refused rather than silently trained no further."""
    saved = load_latest(run, job.folder, model, ema, optimizer, identity)
    start = saved["step"] if saved else 0
    if start > cfg.steps:
        raise ParisError(f"{job.name}: its checkpoint is at step {start}, past the {cfg.steps} steps asked for; "
                         f"ask for at least {start} steps or delete {run.url}/{job.folder} to start over")
    if saved and dist.is_main:
        progress.say(f"{job.name}: resuming from step {start}")
    return saved, start


def _step(training: _Training, step: int) -> tuple[float, torch.Tensor, float]:
    """One optimisation step on global batch `step`: its loss (the mean over every process), the gradient norm
    before clipping, and the learning rate it took."""
    job, cfg, dist, micro = training.job, training.cfg, training.dist, training.micro
    index = training.batches(step)
    if step + 1 < cfg.steps:
        job.data.prefetch(training.batches.next_window(step))  # read ahead while this step computes
    total = torch.zeros((), device=dist.device)
    for i in range(training.accumulation):
        positions = training.positions[i * micro : (i + 1) * micro]
        # Gradients are all-reduced only on the last micro-batch of the step.
        last = i == training.accumulation - 1
        sync = contextlib.nullcontext() if last or dist.world_size == 1 else training.forward.no_sync()
        with sync, training.autocast:
            loss = job.loss(training.forward, index[positions], SampleRandom(cfg.seed, step, positions), dist.device)
            (loss / training.accumulation).backward()
        total += loss.detach() / training.accumulation
    step_loss = dist.mean(total).item()  # the step's one wait for the device
    if not math.isfinite(step_loss):
        raise ParisError(f"{job.name}: loss became {step_loss} at step {step + 1}; training stopped, checkpoints "
                         f"made before it are kept under {training.run.url}/{job.folder}/ckpt (try a lower lr)")
    grad_norm = torch.nn.utils.clip_grad_norm_(training.params, cfg.grad_clip)
    lr = learning_rate(cfg, step)
    for group in training.optimizer.param_groups:
        group["lr"] = lr
    training.optimizer.step()
    training.optimizer.zero_grad(set_to_none=True)
    _update_ema(training.ema_params, training.params, cfg.ema_decay, step)
    return step_loss, grad_norm, lr


def _checkpoint(training: _Training, step: int) -> None:
    if training.dist.is_main:
        training.metrics.flush(step)
        save_checkpoint(training.run, training.job.folder, step, training.model, training.ema, training.optimizer,
                        {"identity": training.identity, "config": dataclasses.asdict(training.cfg),
                         "loss": training.last_loss, "compiled": training.compiled},
                        training.cfg.keep_checkpoints)


def _finish(training: _Training) -> dict:
    """Rank 0 exports the EMA to <folder>/final with what it was trained on; every process then leaves together."""
    cfg, job = training.cfg, training.job
    summary = {"steps": cfg.steps, "batch_size": cfg.batch_size, "samples_seen": cfg.steps * cfg.batch_size,
               "final_loss": training.last_loss, "config_hash": _hash(dataclasses.asdict(cfg)), **job.identity}
    if training.dist.is_main:
        job.export(training.run, layout.final(job.folder), training.ema, manifest=summary)
        training.metrics.close()
    training.dist.barrier()
    distributed.teardown()
    return summary


def _compiled_or_eager(job: Job, cfg: TrainConfig, model: nn.Module, forward: nn.Module,
                       dist: distributed.Distributed, saved: dict | None, start: int, positions: torch.Tensor,
                       autocast, batches) -> tuple[nn.Module, bool]:
    """The job's forward, through torch.compile or not as paris.train.compiling chooses, and which it is. A compile
    is paid here, before the first step, by a forward and backward of this process's first micro-batch."""

    def trial(module: nn.Module) -> None:  # its gradients are thrown away: no step is taken
        with autocast:
            loss = job.loss(module, batches(start)[positions], SampleRandom(cfg.seed, start, positions), dist.device)
            loss.backward()
        model.zero_grad(set_to_none=True)

    recorded = saved.get("compiled", saved["config"].get("compile") is True) if saved else None  # older: a bool
    key = compiling.shape_key(model, len(positions), dist.device, cfg.precision)
    choice = compiling.choose(cfg.compile, recorded, cfg.steps - start, dist.device, trial, model, key)
    compiled = dist.any(choice.compiled)  # every process of the job alike
    if dist.is_main and cfg.compile != "off":
        progress.say(f"{job.name}: {'compiling' if compiled else 'not compiling'} ({choice.why})")
    if not compiled:
        return forward, False
    forward, seconds, warm = compiling.compile_forward(forward, trial, key)
    if dist.is_main:
        progress.say(f"{job.name}: compiled in {seconds:.0f} s" + (" (from this machine's cache)" if warm else ""))
    return forward, True


def micro_batches(cfg: TrainConfig, world_size: int) -> tuple[int, int]:
    """(micro-batch size, accumulation steps) for this machine; refuses splits that do not divide evenly."""
    if cfg.batch_size % world_size:
        raise ParisError(f"the global batch {cfg.batch_size} does not split over {world_size} processes; "
                         f"choose a batch_size divisible by {world_size}")
    per_process = cfg.batch_size // world_size
    micro = cfg.micro_batch_size or per_process
    if per_process % micro:
        raise ParisError(f"micro_batch_size {micro} does not divide the {per_process} samples each of the "
                         f"{world_size} processes gets per step; choose a divisor of {per_process}")
    return micro, per_process // micro


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """An optional linear warm-up, constant (DiT/DDM use a constant 1e-4), then with `cooldown` a linear fall over
    the last steps that ends one decay step above 0. Asking a finished job for more steps restarts at full lr."""
    lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
    decay_steps = round(cfg.cooldown * cfg.steps)
    return lr * min(1.0, (cfg.steps - step) / decay_steps) if decay_steps else lr


@torch.no_grad()
def _update_ema(ema_params: list[torch.Tensor], params: list[torch.Tensor], decay: float, step: int) -> None:
    # Warm-up: a young model's EMA should follow it closely, not average in the random initialisation.
    decay = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(ema_params, params, 1 - decay)


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


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
