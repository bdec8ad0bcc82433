"""`paris status RUN`: where every expert and the router stand, read from the run directory alone.

No scheduler, process or network is asked: each job's progress.json, LATEST checkpoint and final/ say it
all, so the same command works on a laptop for a run on s3:// that K clouds are writing to.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

from paris.run import RunDir

STALE_AFTER_S = 15 * 60  # a job silent for longer than this is presumed dead (preempted, crashed)


def job_status(run: RunDir, folder: str, target_steps: int, now: float | None = None) -> dict:
    """Step, target, loss, samples/s, checkpoint age and state (done / running / stale / not started)."""
    now = now or time.time()
    progress = run.read_json(f"{folder}/progress.json") if run.exists(f"{folder}/progress.json") else None
    checkpoint = None
    if run.exists(f"{folder}/LATEST"):
        checkpoint = run.read_json(f"{folder}/{run.read_json(f'{folder}/LATEST')['path']}/state.json")
        target_steps = checkpoint["config"]["steps"]  # what the job itself was asked for
    manifest = run.read_json(f"{folder}/final/manifest.json") if run.exists(f"{folder}/final/manifest.json") else None
    if manifest and manifest["steps"] >= target_steps:
        state = "done"
    elif progress is None and checkpoint is None:
        state = "not started"
    elif now - max(progress["time"] if progress else 0, checkpoint["time"] if checkpoint else 0) > STALE_AFTER_S:
        state = "stale"
    else:
        state = "running"
    return {
        "job": folder,
        "step": max(progress["step"] if progress else 0, checkpoint["step"] if checkpoint else 0),
        "target": target_steps,
        "loss": progress["loss"] if progress else None,
        "samples_per_s": progress["samples_per_s"] if progress else None,
        "checkpoint_age_s": now - checkpoint["time"] if checkpoint else None,
        "state": state,
    }


def run_status(run: RunDir) -> list[dict]:
    from paris.train.expert import expert_steps

    config = run.read_config()
    meta = run.read_json("partition/meta.json")
    rows = [job_status(run, f"experts/{k}", expert_steps(config, meta, k)) for k in range(meta["num_clusters"])]
    # The router's steps derive from its epochs unless given; its checkpoint tells once it has started.
    return rows + [job_status(run, "router", config.router.steps)]


def print_status(rows: list[dict], url: str) -> None:
    colours = {"done": "green", "running": "cyan", "stale": "red", "not started": "dim"}
    table = Table(title=f"paris status: {url}")
    for column in ("job", "step", "loss", "samples/s", "last checkpoint", "state"):
        table.add_column(column, justify="left" if column in ("job", "state") else "right")
    for r in rows:
        table.add_row(
            r["job"],
            f"{r['step']} / {r['target'] or '?'}",
            "-" if r["loss"] is None else f"{r['loss']:.4f}",
            "-" if r["samples_per_s"] is None else f"{r['samples_per_s']:.0f}",
            "-" if r["checkpoint_age_s"] is None else f"{_age(r['checkpoint_age_s'])} ago",
            f"[{colours[r['state']]}]{r['state']}",
        )
    Console().print(table)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
