"""Commands that train and watch the jobs: train-expert, merge-lora, train-router, train-monolith, train-seed,
distill, launch, status."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from paris import layout
from paris.cli.common import (
    INIT_FROM,
    RUN,
    SET,
    app,
    at_least,
    expert_list,
    init_override,
    run_and_config,
    write_loss_chart,
)
from paris.errors import ParisError
from paris.report.console import console


@app.command("train-expert")
def train_expert(
    run: str = RUN,
    expert: int = typer.Option(..., "--expert", "-e", help="Which expert / cluster to train (0..K-1)."),
    init_from: Optional[str] = INIT_FROM,
    lora: Optional[int] = typer.Option(None, "--lora", help="Train a LoRA of this rank on --init-from (its weights "
                                       "frozen) instead of the whole network, and publish only the adapter "
                                       "(default: expert.lora_rank, none)."),
    lora_targets: Optional[str] = typer.Option(None, "--lora-targets", help="Comma-separated block linears the LoRA "
                                               "adapts: attn.q, attn.kv, attn.proj, cross_attn.q, cross_attn.kv, "
                                               "cross_attn.proj, mlp.0, mlp.2 (default: expert.lora_targets, all)."),
    set: list[str] = SET,
):
    """Train ONE expert on its cluster; resumes from its last checkpoint. Touches only RUN/experts/K."""
    from paris.train.expert import train_expert as train

    overrides = [*init_override("expert", init_from, set), *([f"expert.lora_rank={lora}"] if lora is not None else []),
                 *([f"expert.lora_targets=[{lora_targets}]"] if lora_targets is not None else [])]
    run_dir, cfg = run_and_config(run, overrides)
    summary = train(run_dir, cfg, expert)
    write_loss_chart(run_dir, layout.expert(expert), f"expert {expert}")
    typer.echo(f"expert {expert}: done, final loss {summary['final_loss']:.4f}, weights in {run}/experts/{expert}/final")


@app.command("merge-lora")
def merge_lora(
    run: str = RUN,
    expert: int = typer.Option(..., "--expert", "-e", help="The LoRA expert to merge (0..K-1)."),
    out: Path = typer.Option(..., "--out", help="The ordinary expert folder to write (config.json + "
                             "diffusion_pytorch_model.safetensors), e.g. merged/expert_3."),
    strength: float = typer.Option(1.0, help="How much of the adapter to add: 1 as trained, 0 the base alone."),
):
    """Add a LoRA expert's adapter into its base and write the result as an ordinary expert folder, which
    loads without the base (--init-from takes it, as does any folder of one expert)."""
    from paris.inference.lora_experts import merge_lora as merge
    from paris.run import RunDir

    if not strength >= 0:
        raise ParisError(f"--strength must be at least 0, got {strength}")
    merge(RunDir(run), expert, str(out), strength)
    typer.echo(f"expert {expert}: merged into {out}")


@app.command("train-router")
def train_router(
    run: str = RUN,
    init_from: Optional[str] = INIT_FROM,
    from_expert_samples: Optional[int] = typer.Option(None, "--from-expert-samples", help="Train on the first N images each expert published with `paris sample-expert`, never reading RUN/data (for data that cannot be pooled)."),
    name: str = typer.Option("", "--name", help="Train another router of the same experts into RUN/router-NAME (e.g. --name text --set router.use_text=true); sample with it by `--router NAME`, evaluate it as strategy top2@NAME."),
    set: list[str] = SET,
):
    """Train the router (x_t, t) -> cluster, then report its accuracy per band of t."""
    from paris.report.tables import router_accuracy_table
    from paris.train.router import train_router as train

    at_least("--from-expert-samples", from_expert_samples, 2)
    folder = layout.router(name)
    run_dir, cfg = run_and_config(run, init_override("router", init_from, set))
    summary = train(run_dir, cfg, from_expert_samples, name)
    write_loss_chart(run_dir, folder, folder)
    console.print(router_accuracy_table(summary["accuracy"]))
    typer.echo(f"{folder}: done, mean held-out accuracy {summary['accuracy']['mean']:.1%}, weights in {run}/{folder}/final")


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

    overrides = [*init_override("expert", init_from, set), *([f"baseline.protocol={protocol}"] if protocol else []),
                 *([f"baseline.batch_size={batch_size}"] if batch_size is not None else [])]
    run_dir, cfg = run_and_config(run, overrides)
    summary = train(run_dir, cfg)
    write_loss_chart(run_dir, layout.MONOLITH, "monolith")
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

    run_dir, cfg = run_and_config(run, set)
    summary = train(run_dir, cfg, steps)
    write_loss_chart(run_dir, layout.SEED, "seed")
    typer.echo(f"seed: done after {summary['steps']} steps of {summary['batch_size']}, final loss "
               f"{summary['final_loss']:.4f}; start the experts with --init-from seed/final")


@app.command()
def distill(
    run: str = RUN,
    teacher: Optional[str] = typer.Option(None, help="What the student learns to draw: oracle (each sample's own "
                                          "expert, DDM) or a routing rule of the mixture: top2, full, ... "
                                          "(default: distill.teacher, oracle)."),
    source: Optional[str] = typer.Option(None, help="data (the run's store) or expert-samples (only what `paris "
                                         "sample-expert` published: no raw data needed) (default: distill.source, data)."),
    student_preset: Optional[str] = typer.Option(None, help="The student's DiT preset (default: the experts')."),
    steps: Optional[int] = typer.Option(None, help="Optimiser steps (default: distill.steps)."),
    guidance_distill: bool = typer.Option(False, "--guidance-distill", help="Also take the guidance scale as input "
                                          "(distill.guidance_range) and learn the guided velocity: one pass per "
                                          "step instead of two."),
    name: str = typer.Option("", "--name", help="Train into RUN/student-NAME instead of RUN/student (another "
                             "student of the same experts); evaluate it as strategy student@NAME."),
    init_from: Optional[str] = INIT_FROM,
    set: list[str] = SET,
):
    """Distil the mixture into one student DiT (RUN/student): resumes from its last checkpoint; sample it with
    `paris generate RUN --model student`, evaluate it as strategy student."""
    from paris.train.distill import distill as train

    folder = layout.student(name)
    given = {"teacher": teacher, "source": source, "preset": student_preset, "steps": steps}
    overrides = [*init_override("distill", init_from, set),
                 *(f"distill.{key}={value}" for key, value in given.items() if value is not None),
                 *(["distill.guidance_distill=true"] if guidance_distill else [])]
    run_dir, cfg = run_and_config(run, overrides)
    summary = train(run_dir, cfg, name)
    write_loss_chart(run_dir, folder, folder)
    typer.echo(f"{folder}: done after {summary['steps']} steps of {summary['batch_size']} "
               f"({summary['samples_seen']:,} samples; the experts took {summary['experts_samples_seen']:,}), "
               f"final loss {summary['final_loss']:.4f}, weights in {run}/{folder}/final")


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
    at_least("--jobs", jobs, 1)
    at_least("--gpus-per-expert", gpus_per_expert, 0)
    at_least("--nodes", nodes, 1)
    run_dir, cfg = run_and_config(run, set)
    meta = run_dir.read_json(layout.PARTITION_META)
    targets = {k: expert_steps(cfg, meta, k) for k in expert_list(experts, meta["num_clusters"])}
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
    from paris.roster.status import run_status

    rows = run_status(RunDir(run))
    if json_output:
        typer.echo(json.dumps(rows, indent=2))
    else:
        Console().print(status_table(rows, run))
