"""Commands that make a run's data: prepare, merge, partition, export-clusters."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from paris.cli.common import RUN, SET, app, run_and_config
from paris.errors import ParisError
from paris.report.console import console


@app.command()
def prepare(
    run: str = RUN,
    config: Optional[Path] = typer.Option(None, help="YAML file with the run config (defaults: the paper's values)."),
    data: Optional[str] = typer.Option(None, help="The data set: a directory, tar URL(s) or parquet path (data.path)."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N images (default: data.limit, all)."),
    shard_range: Optional[str] = typer.Option(None, "--shard-range", help="Encode only shards FIRST:END (or FIRST: to the end), for splitting the work over machines; then `paris merge RUN`."),
    set: list[str] = SET,
):
    """Read the data set, encode latents, text and clustering features into RUN/data (resumes where it stopped)."""
    from paris.config import RunConfig, apply_overrides, from_yaml
    from paris.data.prepare import parse_shard_range
    from paris.data.prepare import prepare as prepare_data
    from paris.run import RunDir

    if config is not None and not config.is_file():
        raise ParisError(f"config file {config} not found")
    cfg = from_yaml(config.read_text(), where=str(config)) if config else RunConfig()
    cfg = apply_overrides(cfg, [*set, *([f"data.path={data}"] if data else []), *([f"data.limit={limit}"] if limit is not None else [])])
    prepare_data(RunDir(run), cfg, parse_shard_range(shard_range) if shard_range else (0, None))


@app.command()
def merge(run: str = RUN):
    """Join the shard ranges prepared by `paris prepare --shard-range` into RUN/data/manifest.json."""
    from paris.data.merge import merge as merge_parts
    from paris.run import RunDir

    manifest = merge_parts(RunDir(run))
    typer.echo(f"merged {len(manifest['shards'])} shards: {manifest['count']} images, skipped {manifest['skipped'] or 'none'}")


@app.command()
def partition(
    run: str = RUN,
    clusters: Optional[int] = typer.Option(None, "--clusters", "-k", help="Number of clusters K (default: partition.num_clusters, 8)."),
    seed: Optional[int] = typer.Option(None, help="k-means seed (default: partition.seed)."),
    method: Optional[str] = typer.Option(None, help="kmeans (fine -> coarse), random (ablation) or labels (oracle)."),
    set: list[str] = SET,
):
    """Cluster the data into K semantic clusters (one per expert) and print their sizes."""
    from paris.clusters.partition import partition as make_partition
    from paris.data.shard_format import read_manifest
    from paris.report.tables import partition_table

    overrides = [*set, *([f"partition.num_clusters={clusters}"] if clusters is not None else []),
                 *([f"partition.seed={seed}"] if seed is not None else []),
                 *([f"partition.method={method}"] if method is not None else [])]
    run_dir, cfg = run_and_config(run, overrides)
    part = make_partition(run_dir, cfg.partition)  # also records cfg.partition in the run's config
    console.print(partition_table(part.meta, read_manifest(run_dir).get("class_names")))


@app.command("export-clusters")
def export_clusters(
    run: str = RUN,
    cluster: list[int] = typer.Option([], "--cluster", "-c", help="Export only this cluster (repeatable; default: all)."),
):
    """Write each cluster's data as its own shard set (RUN/clusters/K), so expert K fetches only its bytes."""
    from paris.clusters.export import export_clusters as export
    from paris.run import RunDir

    for k, manifest in export(RunDir(run), cluster or None).items():
        typer.echo(f"cluster {k}: {manifest['count']} images in {len(manifest['shards'])} shards -> {run}/clusters/{k}")
