"""Where every artifact lives in a run directory, named once: the contract between stages and machines.

    config.yaml                          the run's resolved config
    data/manifest.json, data/shards/     the prepared samples (paris.data.shard_format); data/parts/ while split over machines;
                                         data/added/<i>/: data added later (paris.roster.grow)
    partition/meta.json, ...             the clusters (paris.clusters.partition); clusters/<k>/: one cluster's own shards
    experts/<k>/, router/, monolith/, seed/, student/   training jobs (router-<name>/, student-<name>/: another of the same experts): LATEST + ckpt/ (paris.train.checkpoint), progress.json
                                         and metrics/ (paris.train.metrics), final/ (the release layout), loss.png
    eval/report.{json,md,png}            `paris evaluate`;  report.json, samples/, loss_curves.png: `paris demo`
"""

from __future__ import annotations

import re

from paris.errors import ParisError

CONFIG = "config.yaml"

# --- data: a shard set is a folder with a manifest and shards; the run's own is data/ --------------------
DATA = "data"


def manifest(shard_set: str = DATA) -> str:
    return f"{shard_set}/manifest.json"


def shards(shard_set: str = DATA) -> str:
    return f"{shard_set}/shards"


def parts(shard_set: str = DATA) -> str:
    """What each `prepare --shard-range` wrote, until merged into the manifest."""
    return f"{shard_set}/parts"


def added_data(index: int) -> str:
    """The shard set of the index-th data set added to the run (`paris add-expert`); data/manifest.json lists its
    shards after the run's own."""
    return f"data/added/{index}"


def cluster_data(cluster: int) -> str:
    """The shard set of one cluster, written by `paris export-clusters`."""
    return f"clusters/{cluster}"


# --- partition ---------------------------------------------------------------------------------------------
PARTITION_META = "partition/meta.json"  # written last
PARTITION_ASSIGNMENTS = "partition/assignments.safetensors"
PARTITION_CENTROIDS = "partition/centroids.safetensors"


def montage(cluster: int) -> str:
    return f"partition/montage/{cluster}.png"


# --- training jobs -----------------------------------------------------------------------------------------
ROUTER, MONOLITH, SEED, STUDENT = "router", "monolith", "seed", "student"
RETIRED = "retired.json"  # the experts `paris remove-expert` took out of the model


def router(name: str = "") -> str:
    """A router's job folder: router/, or router-<name>/ for another router of the same experts (`paris demo
    --full` trains Paris's, which sees only the noisy image, and DDM's, which also reads the prompt)."""
    return _named(ROUTER, name)


def student(name: str = "") -> str:
    """A student's job folder (`paris distill`): student/, or student-<name>/ for another student of the same
    experts (another teacher rule, source or size)."""
    return _named(STUDENT, name)


def _named(job: str, name: str) -> str:
    if name and not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name):
        raise ParisError(f"bad {job} name {name!r}: use lower-case letters, digits and _ (starting with a letter)")
    return f"{job}-{name}" if name else job


def router_accuracy(name: str = "") -> str:
    return f"{router(name)}/accuracy.json"


def old_router(partition_hash: str) -> str:
    """Where `paris add-expert` keeps the router made for the clusters before it (partition `partition_hash`)."""
    return f"router-{partition_hash}"


def expert_samples(k: int) -> str:
    """The shard set of images expert k generated for a router trained without data (`paris sample-expert`)."""
    return f"experts/{k}/samples"


def expert(k: int) -> str:
    return f"experts/{k}"


def final(job: str) -> str:
    """A job's finished model: config.json + safetensors (+ manifest.json), the release layout."""
    return f"{job}/final"


def progress(job: str) -> str:
    return f"{job}/progress.json"


def preview(job: str, step: int) -> str:
    """The validation prompts a job sampled at `step` (steps zero-padded, so names sort in step order)."""
    return f"{job}/previews/{step:08d}.png"


def loss_chart(job: str) -> str:
    return f"{job}/loss.png"


# --- results -----------------------------------------------------------------------------------------------
EVAL_REPORT, EVAL_TABLE, EVAL_CHART = "eval/report.json", "eval/report.md", "eval/report.png"
DEMO_REPORT, DEMO_LOSS_CURVES = "report.json", "loss_curves.png"
DEMO_ROUTER_WEIGHTS = "samples/router_weights.png"


def demo_samples(strategy: str) -> str:
    return f"samples/{strategy}.png"


# What to run to make a missing artifact, by its first folder (the one table of hints).
NEXT_STEP = {
    "config.yaml": "run `paris prepare RUN` first",
    "data": "run `paris prepare RUN` first",
    "partition": "run `paris partition RUN` first",
    "clusters": "run `paris export-clusters RUN`",
    "router": "train it with `paris train-router RUN`",
    "monolith": "train it with `paris train-monolith RUN`",
    "seed": "train it with `paris train-seed RUN --steps N`",
    "student": "distil it with `paris distill RUN`",
}


def remake(rel: str) -> str:
    """What to do about a damaged artifact `rel`: delete it and make it again."""
    return f"delete it and rerun the stage that wrote it ({next_step(rel)})"


def next_step(rel: str) -> str:
    """What to run to produce the missing artifact `rel`."""
    top, _, rest = rel.partition("/")
    if top == "experts" and rest:
        return f"train it with `paris train-expert RUN --expert {rest.split('/')[0]}`"
    if top.startswith(f"{ROUTER}-"):
        return f"train it with `paris train-router RUN --name {top.removeprefix(f'{ROUTER}-')}`"
    if top.startswith(f"{STUDENT}-"):
        return f"distil it with `paris distill RUN --name {top.removeprefix(f'{STUDENT}-')}`"
    return NEXT_STEP.get(top, "is the run directory right?")
