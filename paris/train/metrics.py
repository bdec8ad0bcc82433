"""A training job's metrics in the run directory, without appending to files (object stores cannot).

- <folder>/progress.json       rewritten at every log step: the newest record, for `paris status`
- <folder>/metrics/<step>.jsonl the records since the previous checkpoint, written with each checkpoint;
                                a job resumed after a crash rewrites the same chunk, so nothing is doubled
- <folder>/tensorboard/         the same scalars (and previews), when tensorboard is installed and the run is local
"""

from __future__ import annotations

import json

from paris import layout
from paris.run import RunDir


class MetricsLog:
    def __init__(self, run: RunDir, folder: str, tensorboard: bool = True):
        self.run, self.folder, self.pending = run, folder, []
        self.writer = _tensorboard_writer(run, folder) if tensorboard else None

    def log(self, record: dict) -> None:
        self.pending.append(record)
        self.run.write_json(layout.progress(self.folder), record)
        if self.writer:
            for key, value in record.items():
                if key not in ("step", "time"):
                    self.writer.add_scalar(key, value, record["step"])

    def image(self, tag: str, pixels, step: int) -> None:
        """An image [H, W, 3] uint8 in TensorBoard (the run directory holds its own PNG)."""
        if self.writer:
            self.writer.add_image(tag, pixels, step, dataformats="HWC")

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
