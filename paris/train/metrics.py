"""A training job's metrics in the run directory, without appending to files (object stores cannot).

- <folder>/progress.json       rewritten at every log step: the newest record, for `paris status`
- <folder>/metrics/<step>.jsonl the records since the previous checkpoint, written with each checkpoint;
                                a job resumed after a crash rewrites the same chunk, so nothing is doubled
- <folder>/tensorboard/         the same scalars (and previews), when tensorboard is installed and the run is local
- Weights & Biases               the same, when the job's config asks (`wandb: true`)
"""

from __future__ import annotations

import hashlib
import json
import os

from paris import layout
from paris.errors import ParisError
from paris.run import RunDir


class MetricsLog:
    def __init__(self, run: RunDir, folder: str, tensorboard: bool = True, wandb: bool = False,
                 config: dict | None = None):
        self.run, self.folder, self.pending = run, folder, []
        self.writer = _tensorboard_writer(run, folder) if tensorboard else None
        self.wandb = _wandb_run(run, folder, config or {}) if wandb else None

    def log(self, record: dict) -> None:
        self.pending.append(record)
        self.run.write_json(layout.progress(self.folder), record)
        if self.writer:
            for key, value in record.items():
                if key not in ("step", "time"):
                    self.writer.add_scalar(key, value, record["step"])
        if self.wandb:
            self.wandb.log({k: v for k, v in record.items() if k not in ("step", "time")}, step=record["step"])

    def image(self, tag: str, pixels, step: int) -> None:
        """An image [H, W, 3] uint8 in TensorBoard (the run directory holds its own PNG)."""
        if self.writer:
            self.writer.add_image(tag, pixels, step, dataformats="HWC")
        if self.wandb:
            import wandb

            self.wandb.log({tag: wandb.Image(pixels)}, step=step)

    def close(self) -> None:
        if self.writer:
            self.writer.close()
        if self.wandb:
            self.wandb.finish()

    def flush(self, step: int) -> None:
        """Write the records since the last flush as the chunk of checkpoint `step`."""
        if self.pending:
            lines = "".join(json.dumps(r) + "\n" for r in self.pending)
            self.run.write_text(f"{self.folder}/metrics/{step:08d}.jsonl", lines)
            self.pending = []
        if self.writer:
            self.writer.flush()


def read_metrics(run: RunDir, folder: str) -> list[dict]:
    """Every record a job has written, in step order, one per step."""
    by_step = {}
    for chunk in run.list(f"{folder}/metrics"):
        for line in run.read_text(f"{folder}/metrics/{chunk}").splitlines():
            record = json.loads(line)
            by_step[record["step"]] = record
    return [by_step[s] for s in sorted(by_step)]


def _tensorboard_writer(run: RunDir, folder: str):
    if not run.is_local:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(run.path(f"{folder}/tensorboard"))


def _wandb_run(run: RunDir, folder: str, config: dict):
    """The wandb run of this job: one id per (run directory, job), so a resumed job logs into the same one."""
    try:
        import wandb
    except ImportError:
        raise ParisError("the config asks for wandb logging (wandb: true) but wandb is not installed; "
                         "`pip install wandb`, or set it to false") from None
    job_id = hashlib.sha256(f"{run.url}/{folder}".encode()).hexdigest()[:16]
    directory = run.path(folder) if run.is_local else None
    try:
        return wandb.init(project=os.environ.get("WANDB_PROJECT", "paris"), id=job_id, resume="allow",
                          name=f"{os.path.basename(run.url)}/{folder}", dir=directory, config=config)
    except wandb.errors.UsageError as e:
        raise ParisError(f"wandb could not start ({str(e).splitlines()[0]}); run `wandb login`, or set "
                         "WANDB_MODE=offline to log to disk only") from None
