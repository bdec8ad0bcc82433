"""Previews while training: the grids appear at the right steps, and a resumed job neither skips nor repeats one."""

from __future__ import annotations

import io

from PIL import Image

from paris.roster.status import run_status
from paris.train.expert import train_expert
from testkit.runs import copy_run, with_expert

PROMPTS = ["a photo of a bag", "a photo of a coat"]


def _previews(run) -> dict[str, bytes]:
    return {name: run.read_bytes(f"experts/0/previews/{name}") for name in run.list("experts/0/previews")}


def test_previews_at_every_preview_step_and_resume_neither_skips_nor_repeats(partitioned, tmp_path, config):
    preview = {"preview_every": 4, "preview_prompts": PROMPTS, "checkpoint_every": 3}
    straight = copy_run(partitioned, tmp_path / "straight")
    train_expert(straight, with_expert(config, steps=12, **preview), 0)
    expected = _previews(straight)
    assert sorted(expected) == ["00000004.png", "00000008.png", "00000012.png"]
    sheet = Image.open(io.BytesIO(expected["00000012.png"]))
    assert sheet.height == 2 * 64  # a row per prompt, the 32-pixel images drawn twice as large
    assert expected["00000004.png"] != expected["00000012.png"]  # it learns between previews

    resumed = copy_run(partitioned, tmp_path / "resumed")
    train_expert(resumed, with_expert(config, steps=7, **preview), 0)  # stops at 7, past a preview, between checkpoints
    assert sorted(_previews(resumed)) == ["00000004.png"]
    train_expert(resumed, with_expert(config, steps=12, **preview), 0)  # resumes from step 7's checkpoint
    assert _previews(resumed) == expected

    status = {row["job"]: row for row in run_status(resumed)}
    assert status["experts/0"]["preview"] == "experts/0/previews/00000012.png"
    assert status["experts/1"]["preview"] is None


def test_no_previews_unless_asked(partitioned, tmp_path, config):
    run = copy_run(partitioned, tmp_path / "run")
    train_expert(run, with_expert(config, steps=4), 0)
    assert run.list("experts/0/previews") == []


def test_wandb_offline_logs_the_metrics_and_previews_to_disk(partitioned, tmp_path, config, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = copy_run(partitioned, tmp_path / "run")
    train_expert(run, with_expert(config, steps=4, wandb=True, preview_every=2, preview_prompts=PROMPTS), 0)
    logs = list((tmp_path / "run" / "experts" / "0" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1 and logs[0].stat().st_size > 0
    media = list((tmp_path / "run" / "experts" / "0" / "wandb").glob("offline-run-*/files/media/images/preview_*.png"))
    assert len(media) == 2  # the previews of steps 2 and 4
