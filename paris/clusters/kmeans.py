"""Hierarchical k-means (Paris, DDM): fine centroids from a sample of the features, then K coarse centroids
of the fine ones weighted by how many samples each holds. Features are streamed shard by shard, so memory
is the sample plus one shard, at any data size."""

from __future__ import annotations

import numpy as np
import torch

from paris.config import PartitionConfig
from paris.data.shard_reader import read_columns
from paris.run import RunDir

MIN_POINTS_PER_CENTROID = 39  # faiss's own minimum for a meaningful centroid


def hierarchical_kmeans(run: RunDir, manifest: dict, cfg: PartitionConfig) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(fine centroids, K coarse centroids, what was done: fine_clusters and train_points)."""
    import faiss

    sample = feature_sample(run, manifest, cfg.max_train_points, cfg.seed)
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


def feature_sample(run: RunDir, manifest: dict, cap: int, seed: int) -> np.ndarray:
    """At most `cap` feature rows chosen at random (fixed by `seed`), float32, read shard by shard."""
    n = manifest["count"]
    chosen = np.sort(np.random.default_rng(seed).choice(n, size=min(cap, n), replace=False))
    parts = []
    for first, columns in read_columns(run, ["features"], manifest=manifest):
        rows = chosen[(chosen >= first) & (chosen < first + len(columns["features"]))] - first
        parts.append(columns["features"][torch.from_numpy(rows)].float().numpy())
    return np.ascontiguousarray(np.concatenate(parts))


def nearest_centroid(run: RunDir, manifest: dict, centroids: torch.Tensor) -> torch.Tensor:
    """The nearest centroid of every sample, one shard at a time."""
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(centroids.numpy())
    out = []
    for _, columns in read_columns(run, ["features"], manifest=manifest):
        _, nearest = index.search(np.ascontiguousarray(columns["features"].float().numpy()), 1)
        out.append(torch.from_numpy(nearest[:, 0]).long())
    return torch.cat(out)
