"""`paris add-expert RUN --data PATH`: grow a trained model with new data, without retraining the old experts.

It prepares a new data set into data/added/<i>/ with the run's own encoders, lists its
shards after the run's in data/manifest.json, and gives its samples new clusters K..K+m-1 (one, or m by k-means
of their features). The old clusters keep their rows, hence their hashes, so their experts stay valid (an expert
is checked against its own cluster's hash): their files are never touched. Then `paris train-expert RUN
--expert K` trains the new one like any other, and only the router is trained again for K+m experts (the old one
moves to router-<old partition hash>/: `--init-from` it with `router.init_fresh_head` to fine-tune).
partition/meta.json keeps the history: which data made which clusters. (Shrinking it: paris.roster.retired.)
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter

import torch

from paris import layout
from paris.clusters.kmeans import hierarchical_kmeans, nearest_centroid
from paris.clusters.partition import Partition, load_partition, publish
from paris.config import DataConfig, from_dict
from paris.data.merge import data_hash
from paris.data.prepare import fingerprint, prepare
from paris.data.source_digest import source_digest
from paris.data.shard_reader import read_columns
from paris.data.shard_format import read_manifest
from paris.errors import ParisError
from paris.run import RunDir

# Where added data may differ from the run's: what is read. Everything else (the encoders, image size, text
# storage, clustering features) must be the run's, or the new samples would not be comparable with the old.
DATA_KEYS = {"source", "path", "split", "caption_column", "image_column", "label_column", "limit", "classes"}


def add_expert(run: RunDir, data: dict, new_clusters: int = 1, device: str = "") -> dict:
    """Add the data set described by `data` (DataConfig fields: path=, source=, classes=, ...) to the run as
    `new_clusters` new clusters; returns {"clusters": [their ids], "count": samples added, "data": its folder}.
    Resumes after a crash at any point; adding the same data twice is refused."""
    if new_clusters < 1:
        raise ParisError(f"--clusters must be at least 1, got {new_clusters}")
    foreign = sorted(set(data) - DATA_KEYS)
    if foreign:
        raise ParisError(f"added data is encoded as the run's own, so data.{foreign[0]} cannot change; set only "
                         f"{', '.join(sorted(DATA_KEYS))}")
    config = run.read_config()
    addition = dataclasses.replace(config, data=from_dict(DataConfig, {**dataclasses.asdict(config.data), **data}, "data."))
    stamp, manifest = fingerprint(addition), read_manifest(run)
    added = manifest.get("added", [])
    content = _refuse_data_already_held(run, addition.data, stamp, manifest)
    prefix = layout.added_data(len(added))
    new = prepare(run, addition, device=device, prefix=prefix)  # resumable: keeps every shard already encoded
    meta = run.read_json(layout.PARTITION_META)
    resumed = meta["data_hash"] != manifest["data_hash"]  # killed after growing the partition: finish the manifest
    first = meta["history"][-1]["clusters"][0] if resumed else meta["num_clusters"]
    record = {"data": prefix, "source": addition.data.source, "path": addition.data.path,
              "classes": addition.data.classes, "fingerprint": stamp, "content": content, "count": new["count"],
              "time": time.time(),
              "clusters": list(range(first, first + new_clusters))}
    grown = _with_addition(manifest, new, prefix, record)
    if not resumed:
        _grow_partition(run, load_partition(run), grown, new, prefix, record)
        if run.exists(layout.ROUTER):  # made for the old clusters: kept (to fine-tune from), out of the way
            run.fs.mv(run.path(layout.ROUTER), run.path(layout.old_router(meta["hash"])), recursive=True)
    elif meta["data_hash"] != grown["data_hash"]:
        raise ParisError(f"the partition of {run.url} was made from other data than {run.url}/data; rerun "
                         f"`paris partition {run.url}` (and train its experts) before adding data")
    run.write_json(layout.manifest(), grown)  # last: the run holds the new data once this is written
    return {"clusters": record["clusters"], "count": new["count"], "data": prefix}


def _refuse_data_already_held(run: RunDir, data: DataConfig, stamp: str, manifest: dict) -> str:
    """The added data's digest (paris.data.source_digest), refused when the run holds that data already: as its own
    or as an earlier addition, wherever it was read from (its config's fingerprint `stamp` says so without reading
    it; data prepared by an older paris has no digest, only that)."""
    content = source_digest(data)
    for entry in manifest.get("added", []):
        if stamp == entry["fingerprint"] or content == entry.get("content"):
            raise ParisError(f"{data.path} holds the images already added from {entry['path']} as clusters "
                             f"{entry['clusters']}; train them with `paris train-expert {run.url} --expert "
                             f"{entry['clusters'][0]}`")
    if stamp == manifest["fingerprint"] or content == manifest.get("content"):
        raise ParisError(f"{data.path} holds the run's own images (prepared from {manifest['path']}); add a data set "
                         "the run has not seen")
    return content


def _with_addition(manifest: dict, new: dict, prefix: str, record: dict) -> dict:
    """The run's manifest with the added shards listed after its own (each naming where it lives)."""
    shards = manifest["shards"] + [{**entry, "prefix": prefix} for entry in new["shards"]]
    return {**manifest, "shards": shards, "count": manifest["count"] + new["count"],
            "skipped": dict(Counter(manifest["skipped"]) + Counter(new["skipped"])),
            "added": manifest.get("added", []) + [record],
            "data_hash": data_hash(shards)}


def _grow_partition(run: RunDir, part: Partition, grown: dict, new: dict, prefix: str, record: dict) -> Partition:
    """The old assignments, then the new rows in clusters record["clusters"]; centroids likewise appended."""
    tagged = {**new, "shards": [{**entry, "prefix": prefix} for entry in new["shards"]]}
    clusters = record["clusters"]
    config = run.read_config()
    cfg = config.partition
    extra = {key: value for key, value in run.load_tensors(layout.PARTITION_CENTROIDS).items() if key != "centroids"}
    if len(clusters) == 1:
        local = torch.zeros(new["count"], dtype=torch.int64)
    else:
        if new["count"] < len(clusters):
            raise ParisError(f"cannot make {len(clusters)} clusters of {new['count']} images; use fewer --clusters")
        _, coarse, _ = hierarchical_kmeans(run, tagged, dataclasses.replace(cfg, num_clusters=len(clusters)))
        local = nearest_centroid(run, tagged, coarse)
    # Pixel-PCA and SimCLR features of added data come from their own fit: comparable among the new rows, not with the
    # old ones. So the old centroids stay as they are, and the new clusters' means are kept beside them.
    features = torch.cat([c["features"].float() for _, c in read_columns(run, ["features"], manifest=tagged)])
    extra[prefix.replace("/", "_")] = torch.stack([features[local == i].mean(0) for i in range(len(clusters))])
    labels = torch.cat([c["labels"] for _, c in read_columns(run, ["labels"], manifest=grown)])
    meta = {**part.meta, "num_clusters": clusters[-1] + 1,
            "history": part.meta.get("history", [{"data": layout.DATA, "clusters": list(range(clusters[0]))}])
            + [{key: record[key] for key in ("data", "path", "classes", "clusters", "time")}]}
    assignments = torch.cat([part.assignments, local + clusters[0]])
    run.write_config(dataclasses.replace(config, partition=dataclasses.replace(cfg, num_clusters=meta["num_clusters"])))
    return publish(run, grown, Partition(assignments, part.centroids, meta), labels, extra, cfg.montage_images, clusters)


def held_classes(run: RunDir, classes: list[int] | None) -> list[int] | None:
    """The Fashion-MNIST classes the run holds, given its own data's `classes`: those and every added data set's
    (None: all). What an evaluation compares against."""
    chosen = [classes, *(added["classes"] for added in read_manifest(run).get("added", []))]
    return None if any(c is None for c in chosen) else sorted(set().union(*chosen))
