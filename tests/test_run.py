"""The run directory behind fsspec: whole-file atomic writes, listing, clear errors, on local disk, memory:// and
S3 (a real S3 server on 127.0.0.1: tests/test_s3.py has what only an object store needs)."""

from __future__ import annotations

import uuid

import fsspec
import pytest
import torch

from paris.config import RunConfig, apply_overrides
from paris.errors import ParisError
from paris.run import RunDir


@pytest.fixture(params=["local", "memory", "s3"])
def run(request, tmp_path):
    if request.param == "local":
        yield RunDir(str(tmp_path / "run"))
    elif request.param == "s3":
        yield RunDir(f"{request.getfixturevalue('s3_bucket')}/run/")
    else:
        name = f"paris-test-{uuid.uuid4().hex[:8]}"
        yield RunDir(f"memory://{name}/run/")  # trailing slash is ignored
        fs = fsspec.filesystem("memory")
        if fs.exists(f"/{name}"):
            fs.rm(f"/{name}", recursive=True)


def test_files_round_trip_and_leave_no_temporaries(run):
    run.write_json("a/b/c.json", {"x": [1, 2]})
    run.write_text("a/note.txt", "hello")
    tensors = {"w": torch.arange(6.0).view(2, 3), "m": torch.tensor([True, False])}
    sha = run.save_tensors("a/t.safetensors", tensors)
    assert run.read_json("a/b/c.json") == {"x": [1, 2]}
    assert run.read_text("a/note.txt") == "hello"
    for loaded in (run.load_tensors("a/t.safetensors"), run.load_tensors("a/t.safetensors", sha256=sha)):
        assert all(torch.equal(loaded[k], tensors[k]) and loaded[k].dtype == tensors[k].dtype for k in tensors)
    assert run.list("a") == ["b", "note.txt", "t.safetensors"]  # no .tmp-* left behind
    assert run.list("missing") == []
    assert run.exists("a/b/c.json") and run.exists("a/b") and not run.exists("a/c.json")


def test_tensors_that_do_not_match_their_sha256_are_refused(run):
    run.save_tensors("t.safetensors", {"w": torch.zeros(3)})
    with pytest.raises(ParisError, match="corrupt"):
        run.load_tensors("t.safetensors", sha256="0" * 64)


def test_overwrite_replaces_whole_file(run):
    run.write_text("f", "a long first version")
    run.write_text("f", "short")
    assert run.read_text("f") == "short"
    assert run.list("") == ["f"]


def test_remove(run):
    run.write_text("logs/m.jsonl", "1\n2\n")
    run.write_text("keep", "k")
    run.remove("logs")
    assert not run.exists("logs/m.jsonl") and not run.exists("logs")
    assert run.list("") == ["keep"]
    run.remove("logs")  # removing what is not there is fine


def test_config_round_trip(run):
    cfg = apply_overrides(RunConfig(), ["expert.steps=5"])
    run.write_config(cfg)
    assert run.read_config() == cfg


@pytest.mark.parametrize("rel,hint", [("config.yaml", "paris prepare"), ("partition/meta.json", "paris partition"),
                                      ("experts/3/LATEST", "paris train-expert"), ("router/x", "train-router")])
def test_missing_file_says_which_stage_makes_it(run, rel, hint):
    with pytest.raises(ParisError, match=hint):
        run.read_bytes(rel)


def test_unwritable_run_directory_is_a_paris_error(tmp_path):
    """A run path below a regular file cannot be created: the user should get a ParisError, not an OSError."""
    (tmp_path / "file").write_text("")
    run = RunDir(str(tmp_path / "file" / "run"))
    with pytest.raises(ParisError, match="file/run"):
        run.write_json("config.json", {})
