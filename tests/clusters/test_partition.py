"""Partition methods (hierarchical k-means with faiss, random, labels; image or caption features), montages,
per-cluster export, and the partition's files and refusals."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image

from testkit.runs import NUM_IMAGES, copy_run, read_all, record_writes, run_in_process
from testkit.tiny_encoders import image_bytes, laion_config, tiny_models, write_folder
from paris.clusters.export import export_clusters, load_cluster
from paris.data.prepare import prepare
from paris.data.shard_reader import read_columns
from paris.data.store import load_store
from paris.errors import ParisError
from paris.clusters.partition import load_partition, partition
from paris.config import PartitionConfig, apply_overrides
from paris.run import RunDir


@pytest.fixture
def run(prepared, tmp_path) -> RunDir:
    """A copy of the prepared Fashion-MNIST run (300 images, 64-d pixel-PCA features)."""
    return copy_run(prepared["path"], tmp_path / "run")


def _features(run: RunDir) -> torch.Tensor:
    return torch.cat([c["features"] for _, c in read_columns(run, ["features"])]).float()


def _purity(histogram) -> float:
    """Share of samples in their cluster's most common class."""
    return sum(max(row) for row in histogram) / sum(map(sum, histogram))


def test_kmeans_is_fine_then_coarse_and_nearest_coarse(run):
    part = partition(run, PartitionConfig(num_clusters=3, seed=1))
    centroids = run.load_tensors("partition/centroids.safetensors")
    n_fine = NUM_IMAGES // 39  # no more fine centroids than 39 points each support
    assert part.meta["fine_clusters"] == n_fine and part.meta["train_points"] == NUM_IMAGES
    assert centroids["fine"].shape == (n_fine, 64) and centroids["coarse"].shape == (3, 64)
    features = _features(run)
    assert torch.equal(part.assignments, torch.cdist(features, centroids["coarse"]).argmin(1))
    for k in range(3):  # the saved per-cluster centroid is the mean of its members
        assert torch.allclose(part.centroids[k], features[part.assignments == k].mean(0), atol=1e-4)


def test_kmeans_is_deterministic_for_a_seed_and_samples_for_training(run, tmp_path):
    other = copy_run(run.url, tmp_path / "other")
    a = partition(run, PartitionConfig(num_clusters=3, seed=4, max_train_points=200))
    b = partition(other, PartitionConfig(num_clusters=3, seed=4, max_train_points=200))
    assert a.meta["hash"] == b.meta["hash"] and torch.equal(a.assignments, b.assignments)
    assert torch.equal(run.load_tensors("partition/centroids.safetensors")["fine"],
                       other.load_tensors("partition/centroids.safetensors")["fine"])
    assert a.meta["train_points"] == 200 and a.meta["fine_clusters"] == 200 // 39
    c = partition(other, PartitionConfig(num_clusters=3, seed=5, max_train_points=200))
    assert not torch.equal(run.load_tensors("partition/centroids.safetensors")["fine"],
                           other.load_tensors("partition/centroids.safetensors")["fine"])
    assert c.meta["seed"] == 5


def test_kmeans_clusters_mean_more_than_random_ones(run):
    kmeans = partition(run, PartitionConfig(num_clusters=4, seed=0))
    random = partition(run, PartitionConfig(num_clusters=4, seed=0, method="random"))
    assert _purity(kmeans.meta["label_histogram"]) > _purity(random.meta["label_histogram"]) + 0.15
    ours, chance = kmeans.meta["label_agreement"], random.meta["label_agreement"]
    assert chance["nmi"] < 0.1 < ours["nmi"] - 0.1, (ours["nmi"], chance["nmi"])
    assert np.mean(chance["in_main_cluster"]) < 0.5 < np.mean(ours["in_main_cluster"])


def test_random_is_balanced_and_seeded(run):
    a = partition(run, PartitionConfig(num_clusters=7, seed=0, method="random"))
    assert sorted(a.meta["sizes"]) == [42] + [43] * 6 and a.meta["method"] == "random"
    assert torch.equal(a.assignments, partition(run, PartitionConfig(num_clusters=7, seed=0, method="random")).assignments)
    assert not torch.equal(a.assignments, partition(run, PartitionConfig(num_clusters=7, seed=1, method="random")).assignments)


def test_labels_method_uses_the_labels_as_clusters(run):
    labels = read_all(load_store(run)).labels
    part = partition(run, PartitionConfig(num_clusters=10, method="labels"))
    assert torch.equal(part.assignments, labels)  # Fashion-MNIST labels are 0..9
    assert part.meta["label_agreement"] == {"nmi": pytest.approx(1.0), "in_main_cluster": [1.0] * 10}
    with pytest.raises(ParisError, match="data has 10 labels; use --clusters 10"):
        partition(run, PartitionConfig(num_clusters=3, method="labels"))


def test_labels_method_without_labels_and_unknown_method(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    prepare(run, laion_config(tiny_models(), "folder", str(write_folder(tmp_path / "images", 4))))
    with pytest.raises(ParisError, match="needs a label for every sample.*data.label_column"):
        partition(run, PartitionConfig(num_clusters=2, method="labels"))
    with pytest.raises(ParisError, match="config key 'partition.method' must be one of kmeans, random, labels; got 'spectral'"):
        apply_overrides(run.read_config(), ["partition.method=spectral"])


@pytest.mark.slow
def test_a_cluster_that_comes_out_empty_is_an_error(tmp_path):
    """Identical images have identical features: k-means cannot make 2 clusters of them."""
    folder = write_folder(tmp_path / "images", 6)
    for i in range(6):
        (folder / f"{i:04d}.jpg").write_bytes(image_bytes(0))
    run = RunDir(str(tmp_path / "run"))
    prepare(run, laion_config(tiny_models(), "folder", str(folder)))
    with pytest.raises(ParisError, match="kmeans left cluster 1 empty; use fewer clusters"):
        partition(run, PartitionConfig(num_clusters=2))
    assert not run.exists("partition/meta.json")


def test_montage_shows_the_first_images_of_each_cluster(run):
    part = partition(run, PartitionConfig(num_clusters=2, seed=0, montage_images=5))
    store = read_all(load_store(run))
    for k in range(2):
        montage = Image.open(io.BytesIO(run.read_bytes(f"partition/montage/{k}.png")))
        assert montage.size == (5 * 96, 96)  # 32x32 images at 3x
        first = int((part.assignments == k).nonzero()[0])
        tile = torch.from_numpy(np.asarray(montage.convert("L").resize((5 * 32, 32), Image.NEAREST)).copy())
        expected = ((store.latents[first, 0].clamp(-1, 1) + 1) * 127.5).round()
        assert (tile[:, :32].float() - expected).abs().max() <= 1


def test_export_gives_each_expert_only_its_cluster(run):
    part = partition(run, PartitionConfig(num_clusters=2, seed=0))
    filtered = [read_all(load_cluster(run, k)[1]) for k in range(2)]
    manifests = export_clusters(run)
    data_bytes = sum(s["bytes"] for s in run.read_json("data/manifest.json")["shards"])
    for k in range(2):
        store = load_cluster(run, k)[1]
        exported = read_all(store)
        assert store.manifest.get("cluster") == k  # read from clusters/k, not data/
        assert torch.equal(exported.rows, (part.assignments == k).nonzero()[:, 0])
        assert torch.equal(exported.latents, filtered[k].latents) and exported.captions == filtered[k].captions
        share = sum(s["bytes"] for s in manifests[k]["shards"]) / data_bytes
        assert abs(share - part.meta["sizes"][k] / NUM_IMAGES) < 0.05
    repartitioned = partition(run, PartitionConfig(num_clusters=2, seed=3, method="random"))  # the export is now stale: not used
    stale = load_cluster(run, 0)[1]
    assert "cluster" not in stale.manifest and torch.equal(read_all(stale).rows, (repartitioned.assignments == 0).nonzero()[:, 0])


def test_cli_partition_method_and_export(run):
    result = run_in_process("partition", run.url, "--clusters", "3", "--method", "random")
    assert result.returncode == 0, result.stderr
    assert "NMI with the labels 0.0" in result.stderr and "in its main cluster" in result.stderr, result.stderr
    assert load_partition(run).meta["method"] == "random" and run.read_config().partition.method == "random"
    result = run_in_process("export-clusters", run.url, "--cluster", "1")
    assert result.returncode == 0, result.stderr
    assert "cluster 1:" in result.stdout and run.exists("clusters/1/manifest.json") and not run.exists("clusters/0")


@pytest.mark.slow
def test_text_features_put_each_caption_class_in_one_cluster(tmp_path, config):
    """Clustering on the captions' embeddings: every Fashion-MNIST class lands whole in one cluster."""
    from paris.data.prepare import prepare
    from paris.clusters.partition import partition
    from paris.config import PartitionConfig

    run = RunDir(str(tmp_path / "run"))
    prepare(run, dataclasses.replace(config, data=dataclasses.replace(config.data, features="text")))
    assert run.read_json("data/manifest.json")["feature_dim"] == 384
    part = partition(run, PartitionConfig(num_clusters=3, seed=0))
    histogram = torch.tensor(part.meta["label_histogram"])  # [cluster, class]
    assert ((histogram > 0).sum(0) == 1).all()  # no class is split between clusters
    agreement = part.meta["label_agreement"]
    assert agreement["in_main_cluster"] == [1.0] * 10 and agreement["nmi"] < 0.9  # 3 clusters are not 10 classes


# --- the partition's files, and what it refuses ---------------------------------------------------

def test_partition_sizes_and_files(partitioned):
    run = RunDir(str(partitioned))
    part = load_partition(run)
    assert part.num_clusters == 2
    assert sum(part.meta["sizes"]) == NUM_IMAGES == len(part.assignments)
    assert part.meta["sizes"] == torch.bincount(part.assignments, minlength=2).tolist()
    assert min(part.meta["sizes"]) > 0
    assert part.centroids.shape == (2, 64)
    histogram = part.meta["label_histogram"]
    assert [sum(row) for row in histogram] == part.meta["sizes"]


def test_partition_is_deterministic_for_a_seed(prepared, tmp_path):
    a = partition(copy_run(prepared["path"], tmp_path / "a"), PartitionConfig(num_clusters=3, seed=5))
    b = partition(copy_run(prepared["path"], tmp_path / "b"), PartitionConfig(num_clusters=3, seed=5))
    assert a.meta["hash"] == b.meta["hash"]
    assert torch.equal(a.assignments, b.assignments)
    assert a.meta["hash"] != partition(RunDir(str(tmp_path / "a")), PartitionConfig(num_clusters=4, seed=5)).meta["hash"]


def test_partition_writes_meta_last(prepared, tmp_path):
    run = copy_run(prepared["path"], tmp_path / "run")
    writes = record_writes(run)
    partition(run, PartitionConfig(num_clusters=2))
    assert writes[-1] == "partition/meta.json"
    assert set(writes) == {"partition/centroids.safetensors", "partition/assignments.safetensors",
                           "partition/montage/0.png", "partition/montage/1.png", "config.yaml", "partition/meta.json"}


@pytest.mark.parametrize("k", [NUM_IMAGES + 1, 0])
def test_partition_refuses_impossible_k(partitioned, tmp_path, k):
    run = copy_run(partitioned, tmp_path / "run")
    before = run.read_bytes("partition/meta.json")
    with pytest.raises(ParisError, match=str(k)):  # 0: refused as the config loads; N + 1: by the partition
        partition(run, apply_overrides(run.read_config(), [f"partition.num_clusters={k}"]).partition)
    assert run.read_bytes("partition/meta.json") == before


def test_partition_without_prepare_says_what_to_run(tmp_path):
    with pytest.raises(ParisError, match="paris prepare"):
        partition(RunDir(str(tmp_path)), PartitionConfig(num_clusters=2))


def test_a_partition_is_published_as_a_whole(partitioned, tmp_path):
    """Re-partitioning removes the pointer before the files change, and assignments that do not match their
    meta.json (a half-written partition, an edited file) are refused."""
    run = copy_run(partitioned, tmp_path / "run")
    seen = []
    save = run.save_tensors
    run.save_tensors = lambda rel, *a, **k: (seen.append(run.exists("partition/meta.json")), save(rel, *a, **k))[1]
    partition(run, PartitionConfig(num_clusters=3, seed=1))
    assert seen and not any(seen)  # no meta.json while centroids and assignments were replaced
    assert load_partition(run).num_clusters == 3
    other = load_partition(run).assignments.clone()
    other[0] = (other[0] + 1) % 3
    save("partition/assignments.safetensors", {"assignments": other})
    with pytest.raises(ParisError, match="does not match partition/meta.json"):
        load_partition(run)
