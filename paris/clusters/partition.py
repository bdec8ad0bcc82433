"""`paris partition`: split the data set into K clusters, one per expert.

kmeans (Paris/DDM): hierarchical k-means of the clustering features (paris.clusters.kmeans); every sample
goes to its nearest coarse centroid.
random: a balanced random split (the ablation).  labels: one cluster per value of the label column (oracle).

Writes partition/centroids.safetensors (per-cluster mean feature; kmeans also fine + coarse centroids),
partition/assignments.safetensors (cluster per sample), partition/montage/<k>.png (a few images of each
cluster), the partition section of config.yaml, and partition/meta.json (written last: K, sizes, seed, a hash of
the assignments). The old meta.json is removed first, so a reader never sees a mix of two partitions.
"""

from __future__ import annotations

import dataclasses
import hashlib

import torch

from paris import layout
from paris import progress
from paris.clusters.kmeans import hierarchical_kmeans, nearest_centroid
from paris.config import PartitionConfig
from paris.data.shard_reader import read_columns, shard_refs
from paris.data.shard_format import read_manifest
from paris.data.store import Store
from paris.errors import ParisError
from paris.run import RunDir


@dataclasses.dataclass
class Partition:
    assignments: torch.Tensor  # [N] int64 cluster id per sample
    centroids: torch.Tensor  # [K, F] the mean feature of each cluster `paris partition` made (see paris.roster.grow)
    meta: dict

    @property
    def num_clusters(self) -> int:
        return self.meta["num_clusters"]


def partition(run: RunDir, cfg: PartitionConfig) -> Partition:
    """Cluster the prepared data of `run` into cfg.num_clusters clusters."""
    manifest = read_manifest(run)
    n, num_clusters, seed = manifest["count"], cfg.num_clusters, cfg.seed
    if num_clusters > n:
        raise ParisError(f"cannot make {num_clusters} clusters from {n} images; use --clusters {n} or fewer")
    extra, info = {}, {}
    if cfg.method == "kmeans":
        fine, coarse, info = hierarchical_kmeans(run, manifest, cfg)
        extra = {"fine": fine, "coarse": coarse}
    labels = torch.cat([c["labels"] for _, c in read_columns(run, ["labels"], manifest=manifest)])
    if cfg.method == "kmeans":
        assignments = nearest_centroid(run, manifest, coarse)
    elif cfg.method == "random":
        assignments = torch.empty(n, dtype=torch.int64)
        assignments[torch.randperm(n, generator=torch.Generator().manual_seed(seed))] = torch.arange(n) % num_clusters
    else:
        assignments = _label_clusters(labels, num_clusters)
    sizes = torch.bincount(assignments, minlength=num_clusters).tolist()
    if min(sizes) == 0:
        raise ParisError(f"{cfg.method} left cluster {sizes.index(0)} empty; use fewer clusters or another --seed")
    centroids = _cluster_means(run, manifest, assignments, num_clusters)
    meta = {
        "num_clusters": num_clusters,
        "method": cfg.method,
        "seed": seed,
        "config": dataclasses.asdict(cfg),
        **info,
        "history": [{"data": layout.DATA, "clusters": list(range(num_clusters))}],  # which data made which clusters
    }
    run.write_config(dataclasses.replace(run.read_config(), partition=cfg))  # the run's config records it
    return publish(run, manifest, Partition(assignments, centroids, meta), labels, extra, cfg.montage_images)


def publish(run: RunDir, manifest: dict, part: Partition, labels: torch.Tensor, extra: dict[str, torch.Tensor],
            montage_images: int, montage_clusters: list[int] | None = None) -> Partition:
    """Write a partition of the data `manifest` describes: the sizes and hashes are added to part.meta here.
    Published as a whole: no pointer while the files change, so no reader ever mixes old and new."""
    assignments, k, data_hash = part.assignments, part.num_clusters, manifest["data_hash"]
    histogram = _label_histogram(labels, assignments, k)
    part.meta.update({
        "sizes": torch.bincount(assignments, minlength=k).tolist(),
        "data_hash": data_hash,  # the partition belongs to this data: checked whenever it is loaded
        "hash": _hash(assignments, data_hash),
        "cluster_hashes": cluster_hashes(assignments, manifest, k),
        "label_histogram": histogram,
        "label_agreement": label_agreement(labels, assignments, histogram),
    })
    run.remove(layout.PARTITION_META)
    run.save_tensors(layout.PARTITION_CENTROIDS, {"centroids": part.centroids, **extra})
    run.save_tensors(layout.PARTITION_ASSIGNMENTS, {"assignments": assignments})
    write_montages(run, manifest, assignments, montage_clusters or range(k), montage_images)
    run.write_json(layout.PARTITION_META, part.meta)  # last
    return part


def cluster_hashes(assignments: torch.Tensor, manifest: dict, k: int) -> list[str]:
    """Per cluster, a hash of its rows and of the shards that hold them. An expert is checked against its own
    cluster's hash: data added to the run (new rows, new shards) or another cluster's change leaves it valid."""
    ends = torch.tensor([e["count"] for e in manifest["shards"]]).cumsum(0)
    shard_of_row = torch.searchsorted(ends, torch.arange(len(assignments)), right=True)
    hashes = []
    for c in range(k):
        rows = (assignments == c).nonzero()[:, 0]
        h = hashlib.sha256(rows.numpy().tobytes())
        for s in shard_of_row[rows].unique().tolist():
            h.update(manifest["shards"][s]["sha256"].encode())
        hashes.append(h.hexdigest()[:16])
    return hashes


def _label_clusters(labels: torch.Tensor, k: int) -> torch.Tensor:
    if (labels < 0).any():
        raise ParisError("--method labels needs a label for every sample; name the label column with "
                         "data.label_column and prepare again")
    values = labels.unique()
    if len(values) != k:
        raise ParisError(f"--method labels makes one cluster per label and the data has {len(values)} labels; "
                         f"use --clusters {len(values)}")
    return torch.searchsorted(values, labels)


def _cluster_means(run: RunDir, manifest: dict, assignments: torch.Tensor, k: int) -> torch.Tensor:
    sums = torch.zeros(k, manifest["feature_dim"], dtype=torch.float64)
    for first, columns in read_columns(run, ["features"], manifest=manifest):
        ids = assignments[first : first + len(columns["features"])]
        sums.index_add_(0, ids, columns["features"].double())
    return (sums / torch.bincount(assignments, minlength=k).clamp(min=1)[:, None]).float()


def write_montages(run: RunDir, manifest: dict, assignments: torch.Tensor, clusters, per_cluster: int) -> None:
    """partition/montage/<k>.png: the first `per_cluster` images of each of `clusters`, decoded from their latents."""
    from paris.models.encoders import build_autoencoder
    from paris.images import grid, save_image

    if per_cluster < 1:
        return
    wanted = {c: (assignments == c).nonzero()[:per_cluster, 0] for c in clusters}
    rows = torch.cat(list(wanted.values())).sort().values
    # Only these rows' bytes are read (usually from the first shard or two), not the whole store.
    store = Store(run, manifest, shard_refs(manifest, layout.DATA))  # the manifest given: it may not be written yet
    latents = dict(zip(rows.tolist(), store.batch(rows).latents.float()))
    enc = manifest["encoders"]
    try:
        autoencoder = build_autoencoder(enc["autoencoder"], enc["autoencoder_path"], enc["latent_scale"])
    except ParisError as e:
        progress.say(f"no montages: {e}", warning=True)
        return
    for c, members in wanted.items():
        images = autoencoder.decode(torch.stack([latents[r] for r in members.tolist()]))
        save_image(run, layout.montage(c), grid(images, rows=1, scale=max(1, 96 // images.shape[-1])))


def read_meta(run: RunDir) -> dict:
    """partition/meta.json; one written before clusters had hashes gets them (reading the assignments once)."""
    meta = run.read_json(layout.PARTITION_META)
    if "cluster_hashes" not in meta:
        assignments = run.load_tensors(layout.PARTITION_ASSIGNMENTS)["assignments"]
        meta["cluster_hashes"] = cluster_hashes(assignments, read_manifest(run), meta["num_clusters"])
    return meta


def trained_on_current(made: dict, meta: dict, cluster: int | None = None) -> bool:
    """Whether a model whose identity is `made` was trained on what the partition `meta` gives it now: an expert
    on its cluster's rows (other clusters may change, data may be added), anything else on the whole partition."""
    if cluster is not None and "cluster_hash" in made:
        return made["cluster_hash"] == meta["cluster_hashes"][cluster]
    return made.get("partition_hash", meta["hash"]) == meta["hash"]


def load_partition(run: RunDir) -> Partition:
    meta = read_meta(run)
    if meta["data_hash"] != read_manifest(run)["data_hash"]:
        raise ParisError(f"the partition in {run.url} was made from other data than {run.url}/data holds now; "
                         f"rerun `paris partition {run.url}`")
    assignments = run.load_tensors(layout.PARTITION_ASSIGNMENTS)["assignments"]
    if _hash(assignments, meta["data_hash"]) != meta["hash"]:
        raise ParisError(f"{run.url}/{layout.PARTITION_ASSIGNMENTS} does not match {layout.PARTITION_META} (another "
                         f"partition is being written, or a file was changed); rerun `paris partition {run.url}`")
    return Partition(assignments, run.load_tensors(layout.PARTITION_CENTROIDS)["centroids"], meta)


def _hash(assignments: torch.Tensor, data_hash: str) -> str:
    """The partition's identity: its assignments, of this data."""
    return hashlib.sha256(assignments.numpy().tobytes() + data_hash.encode()).hexdigest()[:16]


def label_agreement(labels: torch.Tensor, assignments: torch.Tensor,
                    histogram: list[list[int]] | None) -> dict | None:
    """How far the clusters follow the labels' classes (None without labels, as `histogram`, the partition's
    label_histogram): the normalised mutual information (1: the clusters are the classes; 0: independent of them)
    and, per label, the share of its samples that its main cluster holds (1 for every class when none is split, as
    when clusters are unions of whole classes)."""
    from sklearn.metrics import normalized_mutual_info_score  # imported here: every expert process reads partitions

    if histogram is None:
        return None
    counts = torch.tensor(histogram).T  # [label, cluster]
    totals = counts.sum(1)
    shares = (counts.max(1).values / totals.clamp_min(1)).tolist()
    return {"nmi": float(normalized_mutual_info_score(labels.numpy(), assignments.numpy())),
            "in_main_cluster": [round(share, 6) if n else None for share, n in zip(shares, totals.tolist())]}


def main_classes(histogram: list[list[int]] | None, k: int, names: list[str] | None,
                 min_share: float) -> list[tuple[str, float]]:
    """The classes holding at least `min_share` of cluster k (meta.json's label_histogram), largest first, with
    their shares; none where the data has no labels or names, or the cluster is empty."""
    if histogram is None or names is None or k >= len(histogram) or not sum(histogram[k]):
        return []
    row = histogram[k]
    shown = sorted((c for c in range(len(row)) if row[c] and row[c] >= min_share * sum(row)), key=lambda c: -row[c])
    return [(names[c], row[c] / sum(row)) for c in shown]


def _label_histogram(labels: torch.Tensor, assignments: torch.Tensor, k: int) -> list[list[int]] | None:
    """Per cluster, how many samples of each label: shows what each cluster is about (None without labels)."""
    if (labels < 0).any() or len(labels) == 0:
        return None
    counts = torch.zeros(k, int(labels.max()) + 1, dtype=torch.int64)
    counts.index_put_((assignments, labels), torch.ones_like(labels), accumulate=True)
    return counts.tolist()
