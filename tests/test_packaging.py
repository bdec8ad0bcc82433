"""What a user sees of the package before any run: `paris --version`, and the partition table's class lists."""

from __future__ import annotations

import io
from importlib.metadata import version

import torch
from rich.console import Console

from testkit.runs import run_in_process
from paris.report.tables import partition_table


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
