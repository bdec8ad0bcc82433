"""`paris status RUN`: where every expert and the router stand, read from the run directory alone.

No scheduler, process or network is asked: each job's progress.json, LATEST checkpoint and final/ say it
all, so the same command works on a laptop for a run on s3:// that K clouds are writing to.
"""

from __future__ import annotations

import time

from paris import layout
from paris.clusters.partition import read_meta, trained_on_current
from paris.roster.retired import retired_experts
from paris.run import RunDir

STALE_AFTER_S = 15 * 60  # a job silent for longer than this is presumed dead (preempted, crashed)


def job_status(run: RunDir, folder: str, target_steps: int, now: float | None = None, partition: dict | None = None,
               cluster: int | None = None) -> dict:
    """Step, target, loss, samples/s, checkpoint age, state (done / running / stale / not started; outdated:
    made for other clusters than `partition`, the run's current meta, gives it) and the newest preview image."""
    now = now or time.time()
    progress = run.read_json(layout.progress(folder)) if run.exists(layout.progress(folder)) else None
    checkpoint = None
    if run.exists(f"{folder}/LATEST"):
        checkpoint = run.read_json(f"{folder}/{run.read_json(f'{folder}/LATEST')['path']}/state.json")
        target_steps = checkpoint["config"]["steps"]  # what the job itself was asked for
    done = f"{layout.final(folder)}/manifest.json"
    manifest = run.read_json(done) if run.exists(done) else None
    made = manifest or (checkpoint or {}).get("identity")
    if partition is not None and made is not None and not trained_on_current(made, partition, cluster):
        state = "outdated"
    elif manifest and manifest["steps"] >= target_steps:
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
        "preview": f"{folder}/previews/{previews[-1]}" if (previews := run.list(f"{folder}/previews")) else None,
    }


def run_status(run: RunDir) -> list[dict]:
    from paris.train.expert import expert_steps

    config = run.read_config()
    meta = read_meta(run)
    rows = [job_status(run, layout.expert(k), expert_steps(config, meta, k), partition=meta, cluster=k)
            for k in range(meta["num_clusters"])]
    for k in retired_experts(run):
        rows[k]["state"] = "retired"  # paris remove-expert: sampling leaves it out, whatever its training did
    # The router's steps derive from its epochs unless given; its checkpoint tells once it has started.
    return rows + [job_status(run, layout.ROUTER, config.router.steps, partition=meta)]
