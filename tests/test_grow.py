"""Growing a trained model: an expert added for new data (the old experts' files untouched, the router retrained
uses it), an expert removed (never loaded, its weight renormalised away), and a router trained only on images the
experts drew (it never reads data/)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import DiffusionPipeline

from paris import layout
from paris.clusters.partition import load_partition
from paris.errors import ParisError
from paris.roster.grow import add_expert
from paris.inference.pipeline import ParisPipeline
from paris.roster.retired import remove_expert
from paris.run import RunDir
from paris.roster.status import run_status
from paris.train import expert_samples
from paris.train.expert import train_expert
from paris.train.router import train_router
from testkit.runs import FASHION_MNIST, copy_run, run_paris

NEW_DATA = {"split": "test", "limit": 40}  # 40 images the run never saw: Fashion-MNIST's test split


def _file_hashes(run: RunDir, folders: list[str]) -> dict[str, str]:
    root = Path(run.url)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted((root / folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def grown(trained, tmp_path_factory, config):
    """The trained K=2 run, then the test split added as expert 2, that expert trained and the router retrained;
    what the run held before, and what sampling said between the addition and the new router."""
    run = copy_run(trained, tmp_path_factory.mktemp("grown") / "run")
    old = {"files": _file_hashes(run, ["experts/0", "experts/1"]), "partition": load_partition(run),
           "router": run.read_json(f"{layout.final(layout.ROUTER)}/manifest.json")}
    added = add_expert(run, NEW_DATA)
    with pytest.raises(ParisError) as before_router:
        ParisPipeline.from_run(run.url)
    status = {row["job"]: row["state"] for row in run_status(run)}
    config = run.read_config()
    train_expert(run, config, 2)
    train_router(run, config)
    return {"run": run, "old": old, "added": added, "before_router": str(before_router.value), "status": status}


def test_an_added_expert_leaves_the_old_experts_and_their_clusters_as_they_were(grown):
    run, old = grown["run"], grown["old"]
    assert grown["added"] == {"clusters": [2], "count": 40, "data": "data/added/0"}
    assert _file_hashes(run, ["experts/0", "experts/1"]) == old["files"]  # every byte of the old experts
    part = load_partition(run)
    n = len(old["partition"].assignments)
    assert torch.equal(part.assignments[:n], old["partition"].assignments)
    assert (part.assignments[n:] == 2).all() and part.meta["sizes"][2] == 40
    assert part.meta["cluster_hashes"][:2] == old["partition"].meta["cluster_hashes"]
    assert [h["clusters"] for h in part.meta["history"]] == [[0, 1], [2]]
    assert part.meta["history"][1]["data"] == "data/added/0"
    assert run.read_config().partition.num_clusters == 3
    # Between the addition and the new router: the old experts stay done, the old router is kept aside.
    assert grown["status"] == {"experts/0": "done", "experts/1": "done", "experts/2": "not started",
                               "router": "not started"}
    assert "train-router" in grown["before_router"]
    kept = run.read_json(f"{layout.final(layout.old_router(old['partition'].meta['hash']))}/manifest.json")
    assert kept == old["router"]
    assert {row["state"] for row in run_status(run)} == {"done"}


def test_the_retrained_router_sends_samples_to_the_added_expert(grown):
    pipe = ParisPipeline.from_run(grown["run"].url)
    assert pipe.mixture.router.architecture.num_experts == 3
    calls = []
    pipe.mixture.experts[2].register_forward_hook(lambda *args: calls.append(1))
    _, stats = pipe.generate(["a photo of a bag", "a photo of a sneaker"], strategy="full", steps=4, trace=True)
    assert calls and (stats["routing"][:, :, 2] > 0).all()


def test_adding_the_same_data_again_or_another_encoding_is_refused(grown, tmp_path):
    with pytest.raises(ParisError, match="already added from .* as clusters"):
        add_expert(grown["run"], NEW_DATA)
    copy = shutil.copytree(FASHION_MNIST, tmp_path / "elsewhere")  # the same images under another path
    with pytest.raises(ParisError, match=f"{copy} holds the images already added from {FASHION_MNIST} as clusters"):
        add_expert(grown["run"], {**NEW_DATA, "path": str(copy)})
    with pytest.raises(ParisError, match="holds the run's own images"):
        add_expert(grown["run"], {"path": str(copy)})
    assert not grown["run"].exists(layout.added_data(1))  # refused before anything was encoded
    with pytest.raises(ParisError, match="data.max_tokens cannot change"):
        add_expert(grown["run"], {**NEW_DATA, "max_tokens": 8})
    code, _, err = run_paris("add-expert", grown["run"].url, "--data", "x", "--set", "expert.steps=3")
    assert code == 2 and err.startswith("error: --set expert.steps=3: add-expert changes only")


def test_add_expert_killed_before_its_manifest_finishes_on_the_next_run(grown, trained, tmp_path, monkeypatch):
    run = copy_run(trained, tmp_path / "run")
    write_json = RunDir.write_json

    def killed_at_the_manifest(self, rel, obj):
        if rel == layout.manifest():
            raise KeyboardInterrupt
        write_json(self, rel, obj)

    monkeypatch.setattr(RunDir, "write_json", killed_at_the_manifest)
    with pytest.raises(KeyboardInterrupt):
        add_expert(run, NEW_DATA)
    monkeypatch.setattr(RunDir, "write_json", write_json)
    assert add_expert(run, NEW_DATA)["clusters"] == [2]
    assert load_partition(run).meta["hash"] == load_partition(grown["run"]).meta["hash"]


def test_new_data_can_make_several_clusters(trained, tmp_path):
    run = copy_run(trained, tmp_path / "run")
    assert add_expert(run, NEW_DATA, new_clusters=2)["clusters"] == [2, 3]
    sizes = load_partition(run).meta["sizes"]
    assert len(sizes) == 4 and sizes[2] > 0 and sizes[3] > 0 and sizes[2] + sizes[3] == 40


def test_a_removed_expert_is_never_loaded_and_comes_back_when_restored(grown, tmp_path):
    run = copy_run(Path(grown["run"].url), tmp_path / "run")
    code, out, _ = run_paris("remove-expert", run.url, "--expert", "1")
    assert code == 0 and "retired now: 1" in out
    pipe = ParisPipeline.from_run(run.url)
    pipe.mixture.experts.loaders[1] = lambda: pytest.fail("a removed expert was loaded")
    _, stats = pipe.generate(["a photo of a bag"] * 4, strategy="top2", steps=4, trace=True)
    assert stats["routing"][:, :, 1].abs().sum() == 0
    torch.testing.assert_close(stats["routing"].sum(-1), torch.ones(stats["routing"].shape[:2]))
    assert {row["job"]: row["state"] for row in run_status(run)}["experts/1"] == "retired"
    code, out, _ = run_paris("status", run.url)
    assert code == 0 and "retired" in out
    pipe.save_pretrained(str(tmp_path / "pipeline"))  # the removed expert is left out of a pipeline folder
    assert not (tmp_path / "pipeline" / "expert_1").exists()
    saved = ParisPipeline.from_pretrained(str(tmp_path / "pipeline"))
    assert saved.mixture.retired == {1}
    theirs = DiffusionPipeline.from_pretrained(str(tmp_path / "pipeline"), trust_remote_code=True)  # diffusers too
    assert theirs.expert_1 is None and theirs.mixture().retired == {1}
    images = theirs("a photo of a bag", num_inference_steps=4, guidance_scale=3.0, seed=3, strategy="top2",
                    output_type="pt").images
    ours, _ = saved.generate(["a photo of a bag"], steps=4, guidance=3.0, seed=3, strategy="top2")
    torch.testing.assert_close(images, (ours + 1) / 2, atol=1e-5, rtol=1e-5)  # diffusers' pt images are in [0, 1]
    with pytest.raises(ParisError, match="no expert to sample with"):
        for k in (0, 2):
            remove_expert(run, k)
    assert remove_expert(run, 1, restore=True) == [0]
    assert ParisPipeline.from_run(run.url).mixture.retired == {0}


def test_a_router_trained_on_expert_samples_never_reads_the_data(grown, config, tmp_path, monkeypatch):
    run = copy_run(Path(grown["run"].url), tmp_path / "run")
    monkeypatch.setattr(expert_samples, "SHARD", 5)  # 12 images: shards of 5, 5 and 2
    drawn = [expert_samples.sample_expert(run, config, k, 12, batch_size=4) for k in range(3)]
    assert [len(m["shards"]) for m in drawn] == [3, 3, 3]
    (Path(run.url) / "experts/1/samples/shards/000001.safetensors").unlink()  # killed: drawn again, the same
    assert expert_samples.sample_expert(run, config, 1, 12, batch_size=4)["shards"] == drawn[1]["shards"]
    shutil.rmtree(Path(run.url) / "router")
    (Path(run.url) / "data").rename(tmp_path / "hidden")  # nothing under data/ can be read
    with pytest.raises(ParisError, match="sample-expert .* --expert 0 --num 20"):
        train_router(run, config, from_expert_samples=20)
    summary = train_router(run, config, from_expert_samples=12)
    assert summary["expert_samples"] == 12 and summary["num_experts"] == 3
    assert summary["accuracy"]["held_out"] >= 3
    (tmp_path / "hidden").rename(Path(run.url) / "data")
    images, _ = ParisPipeline.from_run(run.url).generate(["a photo of a bag"], strategy="top2", steps=4)
    assert torch.isfinite(images).all()


def test_sample_expert_prompts_come_from_its_own_cluster(grown, config, tmp_path):
    run = copy_run(Path(grown["run"].url), tmp_path / "run")
    drawn = expert_samples.sample_expert(run, config, 2, 6, batch_size=6)
    header = json.loads(_metadata(run, "experts/2/samples/shards/000000.safetensors")["captions"])
    cluster = set(_captions(run, 2))
    assert len(header) == 6 and set(header) <= cluster and drawn["count"] == 6


def _metadata(run: RunDir, rel: str) -> dict:
    from paris.data.shard_format import shard_header

    return shard_header(run, rel)[0]["__metadata__"]


def _captions(run: RunDir, cluster: int) -> list[str]:
    from paris.clusters.export import load_cluster

    _, store = load_cluster(run, cluster)
    return store.batch(torch.arange(len(store))).captions
