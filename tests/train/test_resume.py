"""Bitwise resume, proven: training killed with SIGKILL mid-run and restarted ends with exactly the weights
and optimiser state of an uninterrupted run (one trial here; benchmarks/resume_trials.py runs 20)."""

from __future__ import annotations

import shutil

import pytest

from testkit.resume import identical, kill_and_resume, kill_at_step_40, state
from paris.run import RunDir


@pytest.mark.slow
def test_sigkill_and_resume_is_bitwise_identical(tmp_path, resume_reference):
    base, reference = resume_reference
    run = RunDir(shutil.copytree(base, tmp_path / "killed"))
    kills = kill_and_resume(run, kill_at_step_40, max_kills=1)
    assert kills == 1
    assert run.read_json("experts/0/final/manifest.json")["steps"] == 150
    assert identical(state(run), reference)
