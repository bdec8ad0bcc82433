"""`paris partition`: split the data set into K semantic clusters by k-means over its image features.

Writes partition/centroids.safetensors, partition/assignments.safetensors (cluster id per sample) and
partition/meta.json (written last: K, sizes, seed, a hash of the assignments that experts record).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.table import Table
from sklearn.cluster import KMeans

from paris.data.store import load_store
from paris.errors import ParisError
from paris.run import RunDir

console = Console(stderr=True)


@dataclass
class Partition:
    assignments: torch.Tensor  # [N] int64 cluster id per sample
    centroids: torch.Tensor  # [K, F]
    meta: dict

    @property
    def num_clusters(self) -> int:
        return self.meta["num_clusters"]


def partition(run: RunDir, num_clusters: int, seed: int = 0) -> Partition:
    store = load_store(run)
    if num_clusters < 1:
        raise ParisError(f"the number of clusters must be at least 1, got {num_clusters}")
    if num_clusters > len(store):
        raise ParisError(f"cannot make {num_clusters} clusters from {len(store)} images; use --clusters {len(store)} or fewer")
    kmeans = KMeans(num_clusters, n_init=3, random_state=seed).fit(store.features.numpy())
    assignments = torch.from_numpy(kmeans.labels_).long()
    sizes = torch.bincount(assignments, minlength=num_clusters).tolist()
    if min(sizes) == 0:
        raise ParisError(f"k-means left cluster {sizes.index(0)} empty; use fewer clusters or another --seed")
    data_hash = store.manifest["data_hash"]
    meta = {
        "num_clusters": num_clusters,
        "method": "kmeans",
        "seed": seed,
        "sizes": sizes,
        "data_hash": data_hash,  # the partition belongs to this data: checked whenever it is loaded
        "hash": hashlib.sha256(assignments.numpy().tobytes() + data_hash.encode()).hexdigest()[:16],
        "label_histogram": _label_histogram(store.labels, assignments, num_clusters),
    }
    run.save_tensors("partition/centroids.safetensors", {"centroids": torch.from_numpy(kmeans.cluster_centers_).float()})
    run.save_tensors("partition/assignments.safetensors", {"assignments": assignments})
    run.write_json("partition/meta.json", meta)  # last
    result = Partition(assignments, torch.from_numpy(kmeans.cluster_centers_).float(), meta)
    print_sizes(result, store.manifest.get("class_names"))
    return result


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
    if (labels < 0).any():
        return None
    counts = torch.zeros(k, int(labels.max()) + 1, dtype=torch.int64)
    counts.index_put_((assignments, labels), torch.ones_like(labels), accumulate=True)
    return counts.tolist()


def print_sizes(part: Partition, class_names: list[str] | None) -> None:
    table = Table(title=f"partition: {part.num_clusters} clusters")
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
