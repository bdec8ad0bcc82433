"""The `paris` command: one sub-command per pipeline stage, each a thin wrapper over that stage's function.

\b
    paris prepare RUN            encode a data set into RUN/data (writes RUN/config.yaml)
    paris merge RUN              join shard ranges prepared on several machines
    paris partition RUN          k-means the data into K clusters
    paris export-clusters RUN    one shard set per cluster (optional)
    paris train-expert RUN -e K  train expert K on cluster K (run K of these anywhere, in any order)
    paris train-router RUN       train the router that mixes the experts
    paris generate RUN -p TEXT   sample images
    paris demo                   all of the above on Fashion-MNIST
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from paris.errors import ParisError

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode=None)

RUN = typer.Argument(..., help="Run directory: a local path or an fsspec URL (s3://bucket/run, memory://run).")
SET = typer.Option([], "--set", help="Override a config value for this command, e.g. --set expert.steps=2000 (repeatable).")


def _config(run_url: str, overrides: list[str]):
    from paris.config import apply_overrides
    from paris.run import RunDir

    run = RunDir(run_url)
    return run, apply_overrides(run.read_config(), overrides)


@app.command()
def prepare(
    run: str = RUN,
    config: Optional[Path] = typer.Option(None, help="YAML file with the run config (defaults: the paper's values)."),
    data: Optional[str] = typer.Option(None, help="The data set: a directory, tar URL(s) or parquet path (data.path)."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N images (0 = all)."),
    shard_range: Optional[str] = typer.Option(None, "--shard-range", help="Encode only shards FIRST:END (or FIRST: to the end), for splitting the work over machines; then `paris merge RUN`."),
    set: list[str] = SET,
):
    """Read the data set, encode latents, text and clustering features into RUN/data (resumes where it stopped)."""
    from paris.config import RunConfig, apply_overrides, from_yaml
    from paris.data.prepare import parse_shard_range, prepare as prepare_data
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
    import dataclasses

    from paris.partition import partition as make_partition

    overrides = [*set, *([f"partition.num_clusters={clusters}"] if clusters is not None else []),
                 *([f"partition.seed={seed}"] if seed is not None else []),
                 *([f"partition.method={method}"] if method is not None else [])]
    run_dir, cfg = _config(run, overrides)
    make_partition(run_dir, **dataclasses.asdict(cfg.partition))
    run_dir.write_config(cfg)  # the run's config records the K that was used


@app.command("export-clusters")
def export_clusters(
    run: str = RUN,
    cluster: list[int] = typer.Option([], "--cluster", "-c", help="Export only this cluster (repeatable; default: all)."),
):
    """Write each cluster's data as its own shard set (RUN/clusters/K), so expert K fetches only its bytes."""
    from paris.data.export import export_clusters as export
    from paris.run import RunDir

    for k, manifest in export(RunDir(run), cluster or None).items():
        typer.echo(f"cluster {k}: {manifest['count']} images in {len(manifest['shards'])} shards -> {run}/clusters/{k}")


@app.command("train-expert")
def train_expert(
    run: str = RUN,
    expert: int = typer.Option(..., "--expert", "-e", help="Which expert / cluster to train (0..K-1)."),
    set: list[str] = SET,
):
    """Train ONE expert on its cluster; resumes from its last checkpoint. Touches only RUN/experts/K."""
    from paris.train.expert import train_expert as train

    run_dir, cfg = _config(run, set)
    summary = train(run_dir, cfg, expert)
    typer.echo(f"expert {expert}: done, final loss {summary['final_loss']:.4f}, weights in {run}/experts/{expert}/final")


@app.command("train-router")
def train_router(run: str = RUN, set: list[str] = SET):
    """Train the router (x_t, t) -> cluster, then report its accuracy per band of t."""
    from paris.train.router import train_router as train

    run_dir, cfg = _config(run, set)
    summary = train(run_dir, cfg)
    typer.echo(f"router: done, mean held-out accuracy {summary['accuracy']['mean']:.1%}, weights in {run}/router/final")


@app.command()
def generate(
    run: str = typer.Argument("runs/demo", help="Run directory with trained experts and router."),
    prompt: list[str] = typer.Option([], "--prompt", "-p", help="A text prompt (repeatable)."),
    strategy: Optional[str] = typer.Option(None, help="Routing rule: top1, top2 or full (default: sample.strategy)."),
    num: int = typer.Option(1, help="Images per prompt."),
    steps: Optional[int] = typer.Option(None, help="Euler steps (default: sample.steps, 50)."),
    guidance: Optional[float] = typer.Option(None, help="Classifier-free guidance scale (default: sample.guidance)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (default: sample.seed)."),
    out: Path = typer.Option(Path("samples.png"), help="PNG to write: one row per prompt."),
):
    """Generate images from text prompts with the mixture of experts."""
    from paris.images import grid
    from paris.routing import check_strategy
    from paris.sample import generate as sample, load_mixture

    if not prompt:
        raise ParisError("no prompts given; pass at least one --prompt \"a photo of a sneaker\"")
    if num < 1:
        raise ParisError(f"--num must be at least 1, got {num}")
    run_dir, cfg = _config(run, [])
    s = cfg.sample
    strategy = check_strategy(strategy or s.strategy)
    prompts = [p for p in prompt for _ in range(num)]
    images, _ = sample(load_mixture(run_dir), prompts, strategy, steps or s.steps,
                       s.guidance if guidance is None else guidance, s.seed if seed is None else seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid(images, rows=len(prompt), labels=prompt if len(prompt) > 1 else None, scale=4).save(out)
    typer.echo(f"wrote {out} ({len(prompts)} images, strategy {strategy})")


@app.command()
def demo(
    out: str = typer.Option("runs/demo", help="Run directory of the demo."),
    data: str = typer.Option("/usr/share/datasets/fashion-mnist", help="Directory with the Fashion-MNIST idx.gz files."),
    jobs: int = typer.Option(0, help="Experts trained at once (default: one per CPU core)."),
):
    """Run the whole pipeline on Fashion-MNIST and print a table of the routing strategies."""
    from paris.demo import demo_config, run_demo

    run_demo(out, demo_config(data), jobs)


def main() -> None:
    try:
        app()
    except ParisError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
