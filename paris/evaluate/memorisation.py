"""Memorisation: how often a model draws a near-copy of an image it was trained on (Somepalli et al. 2023).

Each generated image's distance to its nearest training image (L2 over pixels, exact), against the same distance
for held-out real images, which no model saw: an image closer to the training set than 99% of the held-out ones
are is counted as a likely copy. A model that never copies scores about 1%, the held-out images' own share by
construction. The count is also made per expert: among the images whose nearest training image lies in that
expert's cluster (an expert sees 1/K of the data; memorisation is reported from a few thousand images per model).
"""

from __future__ import annotations

import torch

from paris.clusters.partition import load_partition
from paris.data.shard_reader import read_columns
from paris.run import RunDir

CHUNK = 8192  # training images compared at once


class NearestTraining:
    """Exact nearest-neighbour distances to a set of training images, and the cluster of the nearest."""

    def __init__(self, images: torch.Tensor, clusters: torch.Tensor):
        self.points = images.flatten(1).float()
        self.norms = self.points.pow(2).sum(1)
        self.clusters = clusters

    @classmethod
    def of_run(cls, run: RunDir) -> NearestTraining:
        """The run's training images (its data/, stored in pixel space) and their clusters."""
        latents = torch.cat([columns["latents"] for _, columns in read_columns(run, ["latents"])])
        return cls(latents, load_partition(run).assignments[: len(latents)])

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(distance to the nearest training image, that image's cluster) for each of `images`."""
        queries = images.flatten(1).float()
        best = torch.full((len(queries),), float("inf"))
        nearest = torch.zeros(len(queries), dtype=torch.int64)
        for start in range(0, len(self.points), CHUNK):
            points, norms = self.points[start : start + CHUNK], self.norms[start : start + CHUNK]
            squared = queries.pow(2).sum(1, keepdim=True) + norms - 2 * queries @ points.T
            value, index = squared.min(1)
            better = value < best
            best, nearest = torch.where(better, value, best), torch.where(better, index + start, nearest)
        # The closest by the expansion above, measured again directly: exact, not cancelled to a small negative.
        exact = (queries - self.points[nearest]).norm(dim=1)
        return exact, self.clusters[nearest]


def copy_threshold(held_out_distances: torch.Tensor) -> float:
    """The distance below which only 1% of held-out real images lie."""
    return torch.quantile(held_out_distances.double(), 0.01).item()


def memorised_shares(distances: torch.Tensor, clusters: torch.Tensor, threshold: float) -> tuple[float, dict[str, float]]:
    """(share of images closer than `threshold`, the same per cluster of their nearest training image)."""
    copied = distances < threshold
    by_cluster = {str(k): copied[clusters == k].float().mean().item() for k in clusters.unique().tolist()}
    return copied.float().mean().item(), by_cluster
