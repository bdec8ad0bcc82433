"""What the serve page's training tab shows of a run, the titles that say which expert, step, prompts and cluster
each picture is, and that nothing else of the machine is shown through it."""

from __future__ import annotations

import os

from paris import layout
from paris.run import RunDir
from paris.serve.run_files import RUN_FILES, run_file, run_files
from testkit.runs import tiny_config

PNG = b"\x89PNG\r\n\x1a\n"  # the titles are read from names and JSON: the pictures' bytes do not matter


def test_the_training_tab_titles_say_expert_step_prompts_and_cluster(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    run.write_config(tiny_config(preview_prompts=["a bag", "a coat", "a shirt", "a dress", "a sandal"]))
    for path in (layout.preview("experts/0", 1200), layout.preview("experts/0", 2400), layout.loss_chart("experts/0"),
                 layout.montage(0), layout.montage(1), layout.montage(10)):
        run.write_bytes(path, PNG)
    run.write_json(layout.PARTITION_META, {"sizes": [60, 30, 10] + [0] * 8,
                                           "label_histogram": [[15, 45, 0], [0, 3, 27]] + [[0, 0, 0]] * 9})
    run.write_json(layout.manifest(), {"class_names": ["T-shirt", "trouser", "pullover"]})
    files = run_files(run)
    assert files["previews"] == [{"path": "experts/0/previews/00002400.png",
                                  "title": "expert 0 at step 2,400: a bag, a coat, a shirt and 2 more, a row each"}]
    assert files["loss"] == [{"path": "experts/0/loss.png", "title": "expert 0: training loss"}]
    assert [file["title"] for file in files["montages"]] == [
        "cluster 0 (expert 0's data): 60 images (60%), mostly trouser 75%, T-shirt 25%",  # the most first
        "cluster 1 (expert 1's data): 30 images (30%), mostly pullover 90%",
        "cluster 10 (expert 10's data): 0 images (0%)"]  # in the clusters' order, not the names'
    assert files["report"] == []
    assert all(RUN_FILES.fullmatch(file["path"]) for kind in files.values() for file in kind)


def test_previews_without_prompts_say_whose_captions_they_draw(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    run.write_config(tiny_config(preview_prompts=[]))
    run.write_bytes(layout.preview("experts/1", 6), PNG)
    run.write_bytes(layout.preview("experts/0", 6), PNG)
    assert [file["title"] for file in run_files(run)["previews"]] == [
        "expert 0 at step 6: its data's first captions, a row each",
        "expert 1 at step 6: its data's first captions, a row each"]


def test_a_run_file_is_read_only_inside_the_run_and_only_if_the_page_shows_its_kind(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    run.write_bytes(layout.loss_chart("experts/0"), PNG)
    run.write_bytes(layout.montage(0), PNG)
    (tmp_path / "secret.png").write_bytes(b"not the run's")
    os.symlink(tmp_path / "secret.png", run.path(layout.montage(1)))  # a name the page shows, leading out
    os.symlink(run.path(layout.montage(0)), run.path(layout.montage(2)))  # one that stays inside: fine
    run.write_text("config.yaml", "private: true")
    assert run_file(run, layout.loss_chart("experts/0")) == PNG and run_file(run, layout.montage(2)) == PNG
    assert run_file(run, layout.montage(1)) is None
    assert run_file(run, "config.yaml") is None and run_file(run, "partition/montage/../../config.yaml") is None
    assert run_file(run, layout.montage(3)) is None  # not there
