"""`paris partition`: split the data set into K clusters, one per expert.

kmeans (Paris/DDM): fine k-means (default 1024 centroids, faiss) on a random sample of the image features,
then the fine centroids, weighted by how many samples each holds, are clustered into K coarse centroids;
every sample goes to its nearest coarse centroid. Features are streamed shard by shard, so memory is
the sample plus one shard, at any data size.
random: a balanced random split (the ablation).  labels: one cluster per value of the label column (oracle).

Writes partition/centroids.safetensors (per-cluster mean feature; kmeans also fine + coarse centroids),
partition/assignments.safetensors (cluster per sample), partition/montage/<k>.png (a few images of each
cluster) and partition/meta.json (written last: K, sizes, seed, a hash of the assignments).
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from paris.config import PartitionConfig
from paris.data.store import read_columns, read_manifest
from paris.errors import ParisError
from paris.run import RunDir

console = Console(stderr=True)
METHODS = ("kmeans", "random", "labels")
MIN_POINTS_PER_CENTROID = 39  # faiss's own minimum for a meaningful centroid


@dataclasses.dataclass
class Partition:
    assignments: torch.Tensor  # [N] int64 cluster id per sample
    centroids: torch.Tensor  # [K, F]
    meta: dict

    @property
    def num_clusters(self) -> int:
        return self.meta["num_clusters"]


def partition(run: RunDir, num_clusters: int, seed: int = 0, **options) -> Partition:
    """Cluster the prepared data of `run`; `options` are the other PartitionConfig fields."""
    cfg = PartitionConfig(num_clusters=num_clusters, seed=seed, **options)
    manifest = read_manifest(run)
    n = manifest["count"]
    if cfg.method not in METHODS:
        raise ParisError(f"unknown partition method {cfg.method!r}; choose one of {', '.join(METHODS)}")
    if num_clusters < 1:
        raise ParisError(f"the number of clusters must be at least 1, got {num_clusters}")
    if num_clusters > n:
        raise ParisError(f"cannot make {num_clusters} clusters from {n} images; use --clusters {n} or fewer")
    extra, info = {}, {}
    if cfg.method == "kmeans":
        fine, coarse, info = hierarchical_kmeans(run, manifest, cfg)
        extra = {"fine": fine, "coarse": coarse}
    labels = torch.cat([c["labels"] for _, c in read_columns(run, ["labels"], manifest=manifest)])
    if cfg.method == "kmeans":
        assignments = _nearest(run, manifest, coarse)
    elif cfg.method == "random":
        assignments = torch.empty(n, dtype=torch.int64)
        assignments[torch.randperm(n, generator=torch.Generator().manual_seed(seed))] = torch.arange(n) % num_clusters
    else:
        assignments = _label_clusters(labels, num_clusters)
    sizes = torch.bincount(assignments, minlength=num_clusters).tolist()
    if min(sizes) == 0:
        raise ParisError(f"{cfg.method} left cluster {sizes.index(0)} empty; use fewer clusters or another --seed")
    centroids = _cluster_means(run, manifest, assignments, num_clusters)
    data_hash = manifest["data_hash"]
    meta = {
        "num_clusters": num_clusters,
        "method": cfg.method,
        "seed": seed,
        "config": dataclasses.asdict(cfg),
        **info,
        "sizes": sizes,
        "data_hash": data_hash,  # the partition belongs to this data: checked whenever it is loaded
        "hash": hashlib.sha256(assignments.numpy().tobytes() + data_hash.encode()).hexdigest()[:16],
        "label_histogram": _label_histogram(labels, assignments, num_clusters),
    }
    run.save_tensors("partition/centroids.safetensors", {"centroids": centroids, **extra})
    run.save_tensors("partition/assignments.safetensors", {"assignments": assignments})
    write_montages(run, manifest, assignments, num_clusters, cfg.montage_images)
    run.write_json("partition/meta.json", meta)  # last
    result = Partition(assignments, centroids, meta)
    print_sizes(result, manifest.get("class_names"))
    return result


def hierarchical_kmeans(run: RunDir, manifest: dict, cfg: PartitionConfig) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Fine centroids from a sample of the features, then K coarse centroids of the count-weighted fine ones."""
    import faiss

    sample = _feature_sample(run, manifest, cfg.max_train_points, cfg.seed)
    # Never more fine centroids than the sample supports, never fewer than K.
    n_fine = max(cfg.num_clusters, min(cfg.fine_clusters, len(sample) // MIN_POINTS_PER_CENTROID))
    options = dict(niter=cfg.iterations, seed=cfg.seed, min_points_per_centroid=1, max_points_per_centroid=1 << 30)
    fine = faiss.Kmeans(sample.shape[1], n_fine, **options)
    fine.train(sample)
    _, nearest = fine.index.search(sample, 1)
    counts = np.bincount(nearest[:, 0], minlength=n_fine).astype(np.float32)
    coarse = faiss.Kmeans(sample.shape[1], cfg.num_clusters, **options)
    coarse.train(fine.centroids, weights=counts)
    info = {"fine_clusters": n_fine, "train_points": len(sample)}
    return torch.from_numpy(fine.centroids.copy()), torch.from_numpy(coarse.centroids.copy()), info


def _feature_sample(run: RunDir, manifest: dict, cap: int, seed: int) -> np.ndarray:
    """At most `cap` feature rows chosen at random (fixed by `seed`), float32, read shard by shard."""
    n = manifest["count"]
    chosen = np.sort(np.random.default_rng(seed).choice(n, size=min(cap, n), replace=False))
    parts = []
    for first, columns in read_columns(run, ["features"], manifest=manifest):
        rows = chosen[(chosen >= first) & (chosen < first + len(columns["features"]))] - first
        parts.append(columns["features"][torch.from_numpy(rows)].float().numpy())
    return np.ascontiguousarray(np.concatenate(parts))


def _nearest(run: RunDir, manifest: dict, centroids: torch.Tensor) -> torch.Tensor:
    """The nearest centroid of every sample, one shard at a time."""
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(centroids.numpy())
    out = []
    for _, columns in read_columns(run, ["features"], manifest=manifest):
        _, nearest = index.search(np.ascontiguousarray(columns["features"].float().numpy()), 1)
        out.append(torch.from_numpy(nearest[:, 0]).long())
    return torch.cat(out)


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


def write_montages(run: RunDir, manifest: dict, assignments: torch.Tensor, k: int, per_cluster: int) -> None:
    """partition/montage/<k>.png: the first `per_cluster` images of each cluster, decoded from their latents."""
    from paris.data.encoders import build_autoencoder
    from paris.images import grid, save_png

    if per_cluster < 1:
        return
    wanted = {c: (assignments == c).nonzero()[:per_cluster, 0] for c in range(k)}
    rows = torch.cat(list(wanted.values())).sort().values
    latents = {}
    for first, columns in read_columns(run, ["latents"], manifest=manifest):
        for row in rows[(rows >= first) & (rows < first + len(columns["latents"]))].tolist():
            latents[row] = columns["latents"][row - first].float()
    enc = manifest["encoders"]
    try:
        autoencoder = build_autoencoder(enc["autoencoder"], enc["autoencoder_path"], enc["latent_scale"])
    except ParisError as e:
        console.print(f"[yellow]no montages: {e}[/]")
        return
    for c, members in wanted.items():
        images = autoencoder.decode(torch.stack([latents[r] for r in members.tolist()]))
        save_png(run, f"partition/montage/{c}.png", grid(images, rows=1, scale=max(1, 96 // images.shape[-1])))


def load_partition(run: RunDir) -> Partition:
    meta = run.read_json("partition/meta.json")
    if meta["data_hash"] != run.read_json("data/manifest.json")["data_hash"]:
        raise ParisError(f"the partition in {run.url} was made from other data than {run.url}/data holds now; "
                         f"rerun `paris partition {run.url}`")
    return Partition(
        run.load_tensors("partition/assignments.safetensors")["assignments"],
        run.load_tensors("partition/centroids.safetensors")["centroids"],
        meta,
    )


def _label_histogram(labels: torch.Tensor, assignments: torch.Tensor, k: int) -> list[list[int]] | None:
    """Per cluster, how many samples of each label: shows what each cluster is about (None without labels)."""
    if (labels < 0).any() or len(labels) == 0:
        return None
    counts = torch.zeros(k, int(labels.max()) + 1, dtype=torch.int64)
    counts.index_put_((assignments, labels), torch.ones_like(labels), accumulate=True)
    return counts.tolist()


def print_sizes(part: Partition, class_names: list[str] | None) -> None:
    table = Table(title=f"partition: {part.num_clusters} clusters ({part.meta['method']})")
    table.add_column("cluster", justify="right")
    table.add_column("images", justify="right")
    table.add_column("share", justify="right")
    table.add_column("main classes")
    total = sum(part.meta["sizes"])
    for k, size in enumerate(part.meta["sizes"]):
        table.add_row(str(k), str(size), f"{size / total:.1%}", _main_classes(part.meta["label_histogram"], k, class_names))
    console.print(table)


def _main_classes(histogram, k: int, names: list[str] | None) -> str:
    if histogram is None or names is None:
        return ""
    row = histogram[k]
    top = sorted(range(len(row)), key=lambda c: -row[c])[:3]
    return ", ".join(f"{names[c]} {row[c] / sum(row):.0%}" for c in top if row[c])
