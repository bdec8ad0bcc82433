"""The shards `paris prepare` writes: resume after a kill, split over machines then merge, refusing shards that lie."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from testkit.runs import FASHION_MNIST, run_in_process
from testkit.tiny_encoders import laion_config, tiny_models, with_data, write_folder
from paris.data import fashion_mnist
from paris.data import prepare as prepare_module
from paris.data.merge import merge
from paris.data.prepare import prepare
from paris.data.shard_format import content_hash, parse_shard
from paris.data.store import load_store
from testkit.runs import read_all
from paris.errors import ParisError
from paris.run import RunDir

NUM = 10  # shard_size 4: shards of 4, 4, 2


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("images") / "images", NUM)


@pytest.fixture(scope="module")
def config(folder):
    return laion_config(tiny_models(), "folder", str(folder))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, config):
    """One uninterrupted prepare: what every resumed or split run must reproduce byte for byte."""
    run = RunDir(str(tmp_path_factory.mktemp("baseline") / "run"))
    return run, prepare(run, config)


def shard_contents(run: RunDir) -> dict[str, str]:
    """Shard name -> hash of its tensors and metadata (the bytes differ: safetensors orders header keys freely)."""
    contents = {}
    for name in run.list("data/shards"):
        if name.endswith(".safetensors"):
            contents[name] = content_hash(*parse_shard(run.read_bytes(f"data/shards/{name}"), name))
    return contents


def assert_same_store(run: RunDir, baseline) -> None:
    reference, manifest = baseline
    assert run.read_json("data/manifest.json")["data_hash"] == manifest["data_hash"]
    assert shard_contents(run) == shard_contents(reference)
    a, b = read_all(load_store(run)), read_all(load_store(reference))
    assert a.captions == b.captions and torch.equal(a.latents, b.latents) and torch.equal(a.rows, b.rows)


def test_shards_hold_fixed_source_ranges(baseline):
    _, manifest = baseline
    assert [(s["name"], s["count"], s["positions"]) for s in manifest["shards"]] == [
        ("000000.safetensors", 4, 4), ("000001.safetensors", 4, 4), ("000002.safetensors", 2, 2)]
    assert manifest["count"] == NUM and manifest["skipped"] == {}


def test_resume_keeps_whole_shards_and_redoes_broken_ones(tmp_path, baseline, config, monkeypatch):
    """A kill leaves: no manifest, a half-written temporary file, a shard truncated by a non-atomic store."""
    reference, _ = baseline
    shutil.copytree(reference.url, tmp_path / "run")
    run = RunDir(str(tmp_path / "run"))
    run.remove("data/manifest.json")
    run.remove("data/parts")
    shards = tmp_path / "run/data/shards"
    (shards / "000001.safetensors").write_bytes((shards / "000001.safetensors").read_bytes()[:500])
    (shards / "000002.safetensors").rename(shards / "000002.safetensors.tmp-dead")
    encoded = []
    real_write = prepare_module.write_shard
    monkeypatch.setattr(prepare_module, "write_shard",
                        lambda run, prefix, index, *rest: encoded.append(index) or real_write(run, prefix, index, *rest))
    prepare(run, config)
    assert encoded == [1, 2]  # shard 0 was whole and kept
    assert_same_store(run, baseline)


@pytest.mark.slow
def test_resume_after_sigkill_loses_and_duplicates_nothing(tmp_path):
    """A real `paris prepare` killed with SIGKILL mid-run, then rerun, holds every image exactly once."""
    n, shard = 3000, 50
    path = tmp_path / "run"
    args = [sys.executable, "-m", "paris", "prepare", str(path), "--data", FASHION_MNIST, "--limit", str(n),
            "--set", f"data.shard_size={shard}"]
    process = subprocess.Popen(args, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((path / "data/shards").glob("*.safetensors"))) < 3:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = len(list((path / "data/shards").glob("*.safetensors")))
    assert 3 <= written < n // shard and not (path / "data/manifest.json").exists()  # really killed mid-run
    run = RunDir(str(path))
    manifest = prepare(run, run.read_config())
    store = read_all(load_store(run))
    images, labels = fashion_mnist.load(FASHION_MNIST, "train", n)
    assert manifest["count"] == n and len(manifest["shards"]) == n // shard
    assert torch.equal(store.labels, labels) and torch.allclose(store.latents, images, atol=1e-3)
    assert store.captions == [fashion_mnist.caption(int(label), i) for i, label in enumerate(labels)]


def test_split_over_machines_then_merge_equals_one_run(tmp_path, baseline, config):
    run = RunDir(str(tmp_path / "run"))
    prepare(run, config, (2, None))  # machines finish in any order
    with pytest.raises(ParisError, match="shards 0-1 are missing.*--shard-range 0:2"):
        merge(run)
    prepare(run, config, (0, 1))
    with pytest.raises(ParisError, match="shards 1 are missing.*--shard-range 1:2"):
        merge(run)
    prepare(run, config, (1, 2))
    assert not run.exists("data/manifest.json")  # a range never writes the manifest
    merge(run)
    assert_same_store(run, baseline)


def test_merge_refuses_mixed_configs_and_unfinished_sources(tmp_path, config):
    run = RunDir(str(tmp_path / "run"))
    prepare(run, config, (0, 1))
    with pytest.raises(ParisError, match="no part reached the end.*--shard-range 1:"):
        merge(run)
    prepare(run, with_data(config, max_tokens=20), (1, None))
    with pytest.raises(ParisError, match="different data configs"):
        merge(run)


def test_a_shard_that_does_not_match_the_manifest_is_refused_then_repaired(tmp_path, baseline, config):
    shutil.copytree(baseline[0].url, tmp_path / "run")
    run = RunDir(str(tmp_path / "run"))
    shards = tmp_path / "run/data/shards"
    (shards / "000001.safetensors").write_bytes((shards / "000000.safetensors").read_bytes())  # a swapped file
    store = load_store(run)  # same size: found when the shard is first read
    with pytest.raises(ParisError, match="000001.safetensors does not match data/manifest.json.*delete it"):
        read_all(store)
    (shards / "000001.safetensors").write_bytes((shards / "000000.safetensors").read_bytes()[:300])  # cut short
    with pytest.raises(ParisError, match="000001.safetensors is truncated or corrupt.*delete it and rerun"):
        load_store(run)  # found by the size the shard folder lists, before any training
    (shards / "000001.safetensors").unlink()
    prepare(run, config)  # the manifest names a shard that is gone: prepare encodes just that one
    assert_same_store(run, baseline)


def _alter(path, column: str, row: int = 0, at: int = 0) -> None:
    """Flip byte `at` of `column`'s row `row` in place: the file keeps its size and its header."""
    data = bytearray(path.read_bytes())
    header_len = int.from_bytes(data[:8], "little")
    info = json.loads(data[8 : 8 + header_len])[column]
    row_bytes = (info["data_offsets"][1] - info["data_offsets"][0]) // info["shape"][0]
    data[8 + header_len + info["data_offsets"][0] + row * row_bytes + at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("column", ["latents", "labels", "text_ids"])
def test_a_shard_altered_in_place_is_refused_when_read_naming_it(tmp_path, baseline, column):
    shutil.copytree(baseline[0].url, tmp_path / "run")
    run = RunDir(str(tmp_path / "run"))
    _alter(tmp_path / "run/data/shards/000001.safetensors", column, row=1)
    store = load_store(run)  # size and header as the manifest says: nothing is found before the bytes are read
    with pytest.raises(ParisError, match=rf"000001.safetensors is damaged: its {column} does not match its checksum"
                                         r".*delete it and rerun `paris prepare"):
        read_all(store)  # every row of each shard: each column is checked whole


@pytest.mark.parametrize("column", ["latents", "checksums"])
def test_a_job_reading_a_few_rows_checks_each_of_them_and_no_other(tmp_path, baseline, column, monkeypatch):
    from paris.data import shard_reader

    monkeypatch.setattr(shard_reader, "NARROW_ROW", 0)  # these tiny latents would be read whole, as narrow columns are
    shutil.copytree(baseline[0].url, tmp_path / "run")
    run = RunDir(str(tmp_path / "run"))
    # the checksum table's columns are features, labels, latents, ...: damage the one of the latents, which is read
    _alter(tmp_path / "run/data/shards/000000.safetensors", column, row=2, at=16 if column == "checksums" else 0)
    one_row = lambda row: torch.arange(NUM) == row  # noqa: E731
    assert len(read_all(load_store(run, keep=one_row(1)))) == 1  # row 2 is never read, so never refused
    with pytest.raises(ParisError, match=r"000000.safetensors is damaged: its latents \(row 2\)"):
        read_all(load_store(run, keep=one_row(2)))


def test_an_edited_caption_of_the_same_length_is_refused(tmp_path, baseline):
    shutil.copytree(baseline[0].url, tmp_path / "run")
    run = RunDir(str(tmp_path / "run"))
    path = tmp_path / "run/data/shards/000002.safetensors"
    data = path.read_bytes()
    caption = json.loads(load_store(run).batch(torch.tensor([8])).captions[0].join('""'))
    path.write_bytes(data.replace(caption.encode(), caption.upper().encode(), 1))
    with pytest.raises(ParisError, match="000002.safetensors is damaged: its captions metadata does not match"):
        load_store(run).batch(torch.tensor([8]))


def test_shards_written_before_row_checksums_are_read_and_checked_whole(tmp_path, baseline):
    """A run prepared by an older paris (no checksum column) trains as before; its shards are checked against the
    manifest's content hash on their first read."""
    shutil.copytree(baseline[0].url, tmp_path / "run")
    run = RunDir(str(tmp_path / "run"))
    manifest = run.read_json("data/manifest.json")
    for entry in manifest["shards"]:
        rel = f"data/shards/{entry['name']}"
        tensors, meta = parse_shard(run.read_bytes(rel), rel)
        tensors.pop("checksums")
        meta = {k: v for k, v in meta.items() if k not in ("checksummed", "checksummed_meta", "sha256")}
        entry["sha256"] = content_hash(tensors, meta)
        run.save_tensors(rel, tensors, metadata={**meta, "sha256": entry["sha256"]})
        entry["bytes"] = run.fs.size(run.path(rel))
    run.write_json("data/manifest.json", manifest)
    reference = read_all(load_store(baseline[0]))
    assert torch.equal(read_all(load_store(run)).latents, reference.latents)
    _alter(tmp_path / "run/data/shards/000001.safetensors", "latents", row=1)
    with pytest.raises(ParisError, match="000001.safetensors does not match data/manifest.json"):
        read_all(load_store(run))


def test_prepare_refuses_to_replace_data_of_another_config(tmp_path, baseline, config):
    shutil.copytree(baseline[0].url, tmp_path / "run")
    run = RunDir(str(tmp_path / "run"))
    with pytest.raises(ParisError, match="another data config.*new run directory"):
        prepare(run, with_data(config, image_size=32))
    assert_same_store(run, baseline)


def test_cli_shard_range_and_merge(tmp_path):
    result = run_in_process("prepare", str(tmp_path / "run"), "--shard-range", "5:2")
    assert result.returncode == 2 and "error: bad --shard-range '5:2'" in result.stderr
    result = run_in_process("merge", str(tmp_path / "run"))
    assert result.returncode == 2 and "error: no prepared parts" in result.stderr
