"""Bitwise resume, proven: training killed with SIGKILL mid-run and restarted ends with exactly the weights
and optimiser state of an uninterrupted run (one trial here; benchmarks/resume_trials.py runs 20)."""

from __future__ import annotations

import shutil
import time

import pytest

from testkit.resume import identical, kill_and_resume, state
from paris.run import RunDir


def kill_once_mid_training(run: RunDir, process) -> bool:
    """Kill as soon as the job has logged step 40 (after its first checkpoints, long before step 150)."""
    while process.poll() is None:
        if run.exists("experts/0/progress.json") and run.read_json("experts/0/progress.json")["step"] >= 40:
            return True
        time.sleep(0.01)
    return False


@pytest.mark.slow
def test_sigkill_and_resume_is_bitwise_identical(tmp_path, resume_reference):
    base, reference = resume_reference
    run = RunDir(shutil.copytree(base, tmp_path / "killed"))
    kills = kill_and_resume(run, kill_once_mid_training, max_kills=1)
    assert kills == 1
    assert run.read_json("experts/0/final/manifest.json")["steps"] == 150
    assert identical(state(run), reference)
