"""`paris export-clusters RUN`: each cluster's samples as a shard set of their own, under clusters/<k>/.

The machine that trains expert k then reads only clusters/k (about 1/K of the bytes) instead of
filtering all of data/. One pass over data/ fills every cluster's shards; each cluster's manifest is
written last and names its cluster's hash, so a stale export (the data re-partitioned since)
is ignored by `load_cluster`, which reads the rows of data/ instead.
"""

from __future__ import annotations

import torch

from paris import layout
from paris.clusters.partition import Partition, load_partition, trained_on_current
from paris.data.shard_format import iter_shards, read_manifest, write_shard
from paris.data.store import Store, load_store
from paris.errors import ParisError
from paris.run import RunDir


class _ClusterWriter:
    """Buffers one cluster's rows and writes them as shards of `shard_size` samples."""

    def __init__(self, run: RunDir, cluster: int, shard_size: int):
        self.run, self.prefix, self.shard_size = run, layout.cluster_data(cluster), shard_size
        self.columns: dict[str, list] = {}
        self.meta = {"captions": [], "keys": [], "rows": []}
        self.entries: list[dict] = []

    def add(self, tensors: dict, meta: dict, chosen: torch.Tensor, rows: torch.Tensor) -> None:
        for key, value in tensors.items():
            self.columns.setdefault(key, []).append(value[chosen])
        picked = chosen.tolist()
        self.meta["captions"] += [c for c, k in zip(meta["captions"], picked) if k]
        self.meta["keys"] += [c for c, k in zip(meta["keys"], picked) if k]
        self.meta["rows"] += rows[chosen].tolist()
        while len(self.meta["rows"]) >= self.shard_size:
            self.flush(self.shard_size)

    def flush(self, n: int) -> None:
        if n == 0 and self.entries:
            return
        tensors = {key: torch.cat(values) for key, values in self.columns.items()}
        head = {key: value[:n] for key, value in tensors.items()}
        meta = {key: value[:n] for key, value in self.meta.items()}
        self.entries.append(write_shard(self.run, self.prefix, len(self.entries), head, meta))
        self.columns = {key: [value[n:]] for key, value in tensors.items()}
        self.meta = {key: value[n:] for key, value in self.meta.items()}


def export_clusters(run: RunDir, clusters: list[int] | None = None) -> dict[int, dict]:
    part = load_partition(run)
    clusters = list(range(part.num_clusters)) if clusters is None else clusters
    bad = [k for k in clusters if not 0 <= k < part.num_clusters]
    if bad:
        raise ParisError(f"cluster {bad[0]} does not exist: the partition has clusters 0..{part.num_clusters - 1}")
    manifest = read_manifest(run)
    shard_size = manifest["data_config"]["shard_size"]
    writers = {k: _ClusterWriter(run, k, shard_size) for k in clusters}
    for first, tensors, meta in iter_shards(run, layout.DATA, manifest):
        rows = torch.arange(first, first + len(tensors["labels"]))
        for k, writer in writers.items():
            writer.add(tensors, meta, part.assignments[rows] == k, rows)
    out = {}
    for k, writer in writers.items():
        writer.flush(len(writer.meta["rows"]))
        entries = writer.entries
        out[k] = {**{key: value for key, value in manifest.items() if key != "shards"}, "shards": entries,
                  "count": sum(e["count"] for e in entries), "cluster": k, "cluster_hash": part.meta["cluster_hashes"][k]}
        run.write_json(layout.manifest(layout.cluster_data(k)), out[k])  # last
    return out


def load_cluster(run: RunDir, cluster: int) -> tuple[Partition, Store]:
    """The partition and one cluster's samples: from its export when that is of the current partition
    (1/K of the bytes), else its rows of data/. A job calls this once: the partition is read once."""
    part = load_partition(run)
    if not 0 <= cluster < part.num_clusters:
        raise ParisError(f"expert {cluster} does not exist: the partition has clusters 0..{part.num_clusters - 1}")
    export = layout.cluster_data(cluster)
    if run.exists(layout.manifest(export)) and trained_on_current(read_manifest(run, export), part.meta, cluster):
        return part, load_store(run, export)
    return part, load_store(run, keep=part.assignments == cluster)
