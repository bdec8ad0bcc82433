"""Launchers and status: every backend runs the same per-expert command; status reads the run dir alone."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from testkit.runs import copy_run, run_cli, with_expert
from paris.errors import ParisError
from paris.launch import train_command
from paris.launch.local import available_cores, gpu_groups, launch_local
from paris.launch.skypilot import write_tasks
from paris.launch.slurm import write_sbatch
from paris.models.dit import DiT
from paris.models.io import load_pretrained
from paris.roster.status import job_status, run_status
from paris.train.expert import train_expert


def test_train_command_single_process_and_torchrun():
    assert train_command("s3://b/run", 3, ["expert.steps=9"]) == [
        "python", "-m", "paris", "train-expert", "s3://b/run", "--expert", "3", "--set", "expert.steps=9"]
    multi = train_command("RUN", 1, [], "python", nproc_per_node=8)
    assert multi[:4] == ["python", "-m", "torch.distributed.run", "--nproc-per-node=8"]
    assert multi[-4:] == ["train-expert", "RUN", "--expert", "1"]


def test_gpu_groups():
    assert gpu_groups(["0", "1", "2", "3"], 1) == ["0", "1", "2", "3"]
    assert gpu_groups(["0", "1", "2", "3"], 2) == ["0,1", "2,3"]
    with pytest.raises(ParisError, match="groups of 3"):
        gpu_groups(["0", "1", "2", "3"], 3)


def test_slurm_writes_one_array_task_per_expert(tmp_path):
    path = write_sbatch("s3://bucket/run", [0, 1, 2, 3], tmp_path, ["expert.steps=100"], nodes=2, gpus_per_node=8,
                        max_parallel=2)
    script = path.read_text()
    assert "#SBATCH --array=0,1,2,3%2" in script and "#SBATCH --nodes=2" in script
    assert "#SBATCH --gpus-per-node=8" in script and "#SBATCH --requeue" in script
    srun = [line for line in script.splitlines() if line.startswith("srun ")]
    assert len(srun) == 1
    assert "torch.distributed.run --nproc-per-node=8 --nnodes=$SLURM_NNODES" in srun[0]
    assert srun[0].endswith("train-expert s3://bucket/run --expert $SLURM_ARRAY_TASK_ID --set expert.steps=100")
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0  # valid shell


def test_skypilot_writes_a_task_per_expert_with_the_bucket_mounted(tmp_path):
    paths = write_tasks("s3://bucket/run", [0, 2], tmp_path, [], accelerators="H100:8", nodes=1)
    assert [p.name for p in paths] == ["expert_0.yaml", "expert_2.yaml"]
    task = yaml.safe_load(paths[1].read_text())
    assert task["name"] == "paris-expert-2" and task["resources"]["accelerators"] == "H100:8"
    assert task["file_mounts"] == {"/paris-run": {"source": "s3://bucket/run", "mode": "MOUNT"}}
    assert "--nproc-per-node=8" in task["run"] and "train-expert /paris-run --expert 2" in task["run"]
    with pytest.raises(ParisError, match="bucket URL"):
        write_tasks("runs/local", [0], tmp_path)


def test_status_from_the_run_directory(partitioned, tmp_path, config):
    run = copy_run(partitioned, tmp_path / "run")
    rows = run_status(run)
    assert [r["state"] for r in rows] == ["not started", "not started", "not started"]
    summary = train_expert(run, with_expert(config, steps=3), 0)
    done = job_status(run, "experts/0", 999)
    assert done["state"] == "done" and done["step"] == done["target"] == 3
    assert done["loss"] == pytest.approx(summary["final_loss"])
    # A job whose final export is missing is running while it writes, stale once it falls silent.
    run.remove("experts/0/final")
    assert job_status(run, "experts/0", 3)["state"] == "running"
    assert job_status(run, "experts/0", 3, now=time.time() + 3600)["state"] == "stale"


@pytest.mark.slow
def test_launch_refuses_unknown_backend_and_experts(partitioned):
    assert run_cli("launch", str(partitioned), "--backend", "kube").stderr.startswith("error: unknown backend 'kube'")
    result = run_cli("launch", str(partitioned), "--experts", "0,7")
    assert result.returncode == 2 and "experts [7] do not exist" in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster():
    """A real local Ray instance, started for this test and stopped after it."""
    pytest.importorskip("ray")
    ray = str(Path(sys.executable).parent / "ray")
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    started = subprocess.run([ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                              f"--temp-dir={temp}", "--disable-usage-stats"], capture_output=True, text=True)
    assert started.returncode == 0, started.stderr
    yield f"127.0.0.1:{port}"
    subprocess.run([ray, "stop", "--force"], capture_output=True)
    shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_ray_backend_trains_every_expert_and_reports_a_failure(partitioned, tmp_path, ray_cluster):
    from paris.launch.ray import launch_ray

    run = copy_run(partitioned, tmp_path / "run")
    codes = launch_ray(run.url, [0, 1, 5], ["expert.steps=2"], address=ray_cluster)
    assert codes[0] == 0 and codes[1] == 0 and codes[5] != 0  # expert 5 does not exist; 0 and 1 are unaffected
    for k in (0, 1):
        assert run.read_json(f"experts/{k}/final/manifest.json")["steps"] == 2


@pytest.mark.parametrize("backend", ["slurm", "skypilot"])
def test_launch_scripts_quote_every_value(tmp_path, backend):
    """A `--set` value reaches the expert's command as one word on the node, never as shell code."""
    hostile = "data.caption_column=text; touch PWNED #"
    if backend == "slurm":
        line = next(l for l in write_sbatch("s3://b/run", [0], tmp_path, [hostile]).read_text().splitlines()
                    if l.startswith("srun "))
    else:
        line = yaml.safe_load(write_tasks("s3://b/run", [0], tmp_path, [hostile])[0].read_text())["run"]
    words = "srun() { \"$@\"; }; python() { printf '%s\\n' \"$@\"; }; "  # show the words python would get
    env = {"PATH": os.environ["PATH"], "SKYPILOT_NODE_IPS": "10.0.0.1", "SKYPILOT_NUM_NODES": "1",
           "SKYPILOT_NODE_RANK": "0", "SLURM_ARRAY_TASK_ID": "0", "SLURM_NNODES": "1", "SLURM_JOB_ID": "7", "head": "h"}
    shown = subprocess.run(["bash", "-c", words + line], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert shown.returncode == 0, shown.stderr
    assert hostile in shown.stdout.splitlines() and not (tmp_path / "PWNED").exists()


def test_models_of_an_old_partition_are_outdated_not_done(trained, tmp_path):
    """Re-partitioning leaves experts and router trained on other clusters: status says so, sampling refuses."""
    from paris.clusters.partition import partition
    from paris.config import PartitionConfig
    from paris.inference.pipeline import ParisPipeline

    run = copy_run(trained, tmp_path / "run")
    assert {r["state"] for r in run_status(run)} == {"done"}
    partition(run, PartitionConfig(num_clusters=2, seed=7, method="random"))
    assert {r["state"] for r in run_status(run)} == {"outdated"}
    with pytest.raises(ParisError, match="experts/0 was trained on other clusters"):
        ParisPipeline.from_run(run.url)


@pytest.mark.slow
def test_launch_local_trains_experts_as_processes(partitioned, tmp_path, monkeypatch):
    """Experts 0 and 1 train in two independent processes; expert 5 does not exist: its process fails with
    exit 2 and a one-line error in its log, and that does not stop the others."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the rule under test, not the caller's setting
    run = copy_run(partitioned, tmp_path / "run")
    logs = tmp_path / "logs"
    codes = launch_local(run, {0: 2, 5: 2, 1: 2}, jobs=2, overrides=["expert.steps=2", "expert.threads=null"],
                         log_dir=logs)
    assert codes == {0: 0, 1: 0, 5: 2}, [(logs / f"expert_{k}.log").read_text() for k in (0, 1, 5)]
    for k in (0, 1):
        assert run.read_json(f"experts/{k}/LATEST")["step"] == 2
        assert isinstance(load_pretrained(run, f"experts/{k}/final"), DiT)
        assert f"expert {k}: done" in (logs / f"expert_{k}.log").read_text()
        # Two at once share the cores: never a thread per core each.
        assert f"expert {k}: on cpu, {max(1, available_cores() // 2)} CPU threads" in (logs / f"expert_{k}.log").read_text()
    assert "error: expert 5 does not exist" in (logs / "expert_5.log").read_text()
    assert run.list("experts") == ["0", "1"]
