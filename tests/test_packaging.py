"""What a user sees of the package before any run: installing it, `paris --version`, and the partition table's
class lists."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from rich.console import Console

from testkit.runs import run_in_process
from paris.report.tables import partition_table

ROOT = Path(__file__).resolve().parents[1]
ANOTHER_TORCH = "2.14.1"  # not the Makefile's 2.13.0: a pin to it would replace this one


@pytest.mark.slow  # pip builds the package's metadata: 10-20 s
@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="needs setuptools to build paris offline")
def test_pip_install_keeps_the_torch_an_environment_has(tmp_path):
    """pip resolves `pip install .` against an environment whose torch is another version (a torch dist-info on
    PYTHONPATH, which pip reads before the real one) and installs paris alone: pyproject bounds torch, never pins
    it. Offline: --no-index, and every other requirement is already installed."""
    fake = tmp_path / "site" / f"torch-{ANOTHER_TORCH}.dist-info"
    fake.mkdir(parents=True)
    (fake / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {ANOTHER_TORCH}\n")
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--report", str(report), "--quiet",
                             "--no-index", "--no-build-isolation", str(ROOT)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(fake.parent)}, timeout=300)
    assert result.returncode == 0, result.stderr
    installs = {item["metadata"]["name"]: item["metadata"]["version"] for item in json.loads(report.read_text())["install"]}
    assert "torch" not in installs and "paris" in installs, installs


def test_version_names_paris_and_torch():
    result = run_in_process("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"paris {version('paris')} (torch {torch.__version__})"


def test_the_partition_table_names_every_class_with_five_percent_of_a_cluster():
    names = ["T-shirt", "trouser", "pullover", "dress", "coat"]
    # Cluster 0: four classes at 24% and one at 4%; cluster 1: one class alone.
    meta = {"num_clusters": 2, "method": "kmeans", "sizes": [100, 50], "label_agreement": None,
            "label_histogram": [[24, 24, 24, 24, 4], [0, 0, 0, 0, 50]]}
    console = Console(file=io.StringIO(), width=200)
    console.print(partition_table(meta, names))
    text = console.file.getvalue()
    assert "T-shirt 24%, trouser 24%, pullover 24%, dress 24%" in text and "coat 4%" not in text
    assert "coat 100%" in text
