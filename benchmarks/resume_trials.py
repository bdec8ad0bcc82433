"""Kill-and-resume trials: SIGKILL an expert's training at random moments, restart it until it finishes, and
check that its weights are bitwise identical to an uninterrupted run (CPU, tiny preset).

    PYTHONPATH=. .venv/bin/python benchmarks/resume_trials.py --trials 20

Prints one line per trial (kills, identical or not) and the total. tests/train/test_resume.py runs one trial;
both take their helpers from testkit/resume.py (PYTHONPATH=. makes it importable from the repository root).
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from paris.run import RunDir
from testkit.resume import identical, kill_and_resume, make_run, state, straight


def random_moment(rng: random.Random, low: float = 1.0, high: float = 8.0):
    """Kill at a uniformly random time after the start (start-up, mid-step, mid-checkpoint: anything)."""
    def kill_after(run: RunDir, process: subprocess.Popen) -> bool:
        deadline = time.monotonic() + rng.uniform(low, high)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            time.sleep(0.01)
        return process.poll() is None
    return kill_after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        base = make_run(Path(tmp) / "base")
        reference = straight(RunDir(shutil.copytree(base.url, f"{tmp}/straight")))
        same = 0
        for trial in range(args.trials):
            run = RunDir(shutil.copytree(base.url, f"{tmp}/trial{trial}"))
            kills = kill_and_resume(run, random_moment(rng))
            ok = identical(state(run), reference)
            same += ok
            print(f"trial {trial + 1:2d}: {kills} kills, {'bitwise identical' if ok else 'DIFFERENT'}", flush=True)
            shutil.rmtree(run.url)
    print(f"{same} of {args.trials} kill-and-resume trials bitwise identical to the uninterrupted run")


if __name__ == "__main__":
    main()
