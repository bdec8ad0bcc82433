"""Commands that change which experts make the model: add-expert, remove-expert, sample-expert."""

from __future__ import annotations

from typing import Optional

import typer

from paris import layout
from paris.cli.common import RUN, SET, app, at_least, run_and_config
from paris.errors import ParisError


@app.command("add-expert")
def add_expert(
    run: str = RUN,
    data: str = typer.Option(..., help="The new data set: a directory, tar URL(s) or parquet path, read as --source."),
    source: Optional[str] = typer.Option(None, help="How to read it: fashion-mnist, folder, webdataset or hf (default: the run's data.source)."),
    clusters: int = typer.Option(1, "--clusters", "-m", help="New clusters (experts) to make of it: 1, or m by k-means of its features."),
    set: list[str] = SET,
):
    """Add a data set the run has not seen as new clusters; the old experts' files stay as they are.

    The data is encoded with the run's encoders into RUN/data/added/<i>/. Then train each new expert with
    `paris train-expert RUN --expert K` and train the router again (`paris train-router RUN`). --set may
    change only what is read (data.split, data.classes, data.caption_column, data.limit, ...)."""
    import dataclasses

    from paris.roster.grow import add_expert as add

    at_least("--clusters", clusters, 1)
    wrong = [item for item in set if not item.startswith("data.")]
    if wrong:
        raise ParisError(f"--set {wrong[0]}: add-expert changes only which data is read (data.*)")
    run_dir, cfg = run_and_config(run, [*set, f"data.path={data}", *([f"data.source={source}"] if source else [])])
    own = run_dir.read_config().data
    given = {key: value for key, value in dataclasses.asdict(cfg.data).items() if value != getattr(own, key)}
    added = add(run_dir, given, clusters)
    first, last = added["clusters"][0], added["clusters"][-1]
    typer.echo(f"added {added['count']} images as cluster{'s' if last > first else ''} "
               f"{first}{f'..{last}' if last > first else ''} ({run}/{added['data']}); next: "
               f"`paris train-expert {run} --expert {first}`, then `paris train-router {run}`")


@app.command("remove-expert")
def remove_expert(
    run: str = RUN,
    expert: int = typer.Option(..., "--expert", "-e", help="The expert to retire (0..K-1)."),
    restore: bool = typer.Option(False, "--restore", help="Bring a retired expert back instead."),
):
    """Retire an expert: sampling never loads it and the router's weights are renormalised over the others.
    Nothing is deleted or retrained."""
    from paris.roster.retired import remove_expert as remove
    from paris.run import RunDir

    retired = remove(RunDir(run), expert, restore)
    typer.echo(f"expert {expert} {'restored' if restore else 'retired'}; retired now: "
               f"{', '.join(map(str, retired)) or 'none'}")


@app.command("sample-expert")
def sample_expert(
    run: str = RUN,
    expert: int = typer.Option(..., "--expert", "-e", help="The expert whose images to draw (0..K-1)."),
    num: int = typer.Option(..., "--num", "-n", help="How many images (the router trains on N per expert)."),
    batch_size: int = typer.Option(100, help="Images drawn at once."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    set: list[str] = SET,
):
    """Draw N images from ONE expert, prompted with its own cluster's captions, into RUN/experts/K/samples:
    what a router trained with `paris train-router --from-expert-samples N` learns from instead of the data."""
    from paris.train.expert_samples import sample_expert as draw

    at_least("--num", num, 1)
    at_least("--batch-size", batch_size, 1)
    run_dir, cfg = run_and_config(run, set)
    meta = run_dir.read_json(layout.PARTITION_META)
    if not 0 <= expert < meta["num_clusters"]:
        raise ParisError(f"expert {expert} does not exist: the run has experts 0..{meta['num_clusters'] - 1}")
    manifest = draw(run_dir, cfg, expert, num, batch_size, device)
    typer.echo(f"expert {expert}: {manifest['count']} images in {run}/experts/{expert}/samples")
