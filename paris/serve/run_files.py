"""What the page's training tab shows of a served run: its previews, loss charts, cluster montages and
evaluation, each with a title that says what it is (which expert, which step, which prompts, which cluster)."""

from __future__ import annotations

import os
import re

from paris import layout
from paris.clusters.partition import main_classes
from paris.run import RunDir

# What a served run shows on the page: every other path of the run stays private.
RUN_FILES = re.compile(r"(experts/\d+|router|monolith|seed)/(loss\.png|previews/\d+\.png)|partition/montage/\d+\.png|"
                       r"eval/report\.(png|md|json)|loss_curves\.png|report\.json")
MAIN_CLASS_SHARE = 0.2  # a montage's title names the classes that make at least this share of its cluster
TITLE_PROMPTS = 3  # a preview's title names this many of its prompts; the sheet writes each beside its row


def run_files(run: RunDir) -> dict[str, list[dict]]:
    """The run's artefacts the page shows, by kind: [{"path", "title"}], newest preview last."""
    jobs = [layout.expert(k) for k in range(len(run.list("experts")))] + [layout.ROUTER]
    previews = {job: sorted(run.list(f"{job}/previews"))[-1:] for job in jobs}
    prompts = run.read_config().expert.preview_prompts
    montages = sorted((name for name in run.list("partition/montage") if name.endswith(".png")),
                      key=lambda name: int(name.removesuffix(".png")))
    meta = run.read_json(layout.PARTITION_META) if run.exists(layout.PARTITION_META) else None
    names = run.read_json(layout.manifest()).get("class_names") if run.exists(layout.manifest()) else None
    return {
        "previews": [{"path": f"{job}/previews/{names[0]}", "title": preview_title(job, names[0], prompts)}
                     for job, names in previews.items() if names],
        "loss": [{"path": layout.loss_chart(job), "title": f"{job_title(job)}: training loss"}
                 for job in jobs if run.exists(layout.loss_chart(job))],
        "montages": [{"path": f"partition/montage/{name}",
                      "title": montage_title(int(name.removesuffix(".png")), meta, names)} for name in montages],
        "report": [{"path": path, "title": "evaluation: FID, adherence and cost per routing strategy"}
                   for path in (layout.EVAL_CHART, layout.EVAL_TABLE) if run.exists(path)],
    }


def run_file(run: RunDir, path: str) -> bytes | None:
    """The bytes of a file of the run that the page may show (RUN_FILES); None for any other path, for one that
    does not exist, and for one that leads out of the run through a symlink (resolved here, on a local run)."""
    if not RUN_FILES.fullmatch(path) or not run.exists(path):
        return None
    if run.is_local:
        root = os.path.realpath(run.root)
        if os.path.commonpath([root, os.path.realpath(run.path(path))]) != root:
            return None
    return run.read_bytes(path)


def job_title(job: str) -> str:
    """"expert 3" for experts/3; the job's folder name otherwise (router, monolith, seed)."""
    return job.replace("experts/", "expert ")


def preview_title(job: str, name: str, prompts: list[str]) -> str:
    """Which network drew the sheet, at which step, and its prompts (one row each; without preview_prompts
    the job's own first captions, which the sheet writes beside its rows)."""
    step = int(name.removesuffix(".png"))
    drawn = ", ".join(prompts[:TITLE_PROMPTS]) if prompts else "its data's first captions"
    if len(prompts) > TITLE_PROMPTS:
        drawn += f" and {len(prompts) - TITLE_PROMPTS} more"
    return f"{job_title(job)} at step {step:,}: {drawn}, a row each"


def montage_title(cluster: int, meta: dict | None, names: list[str] | None) -> str:
    """The cluster (the data of the expert of the same number), its size, and its main classes where known
    (`meta`: partition/meta.json, `names`: the data's class names)."""
    title = f"cluster {cluster} (expert {cluster}'s data)"
    if meta is None:
        return title
    sizes = meta.get("sizes") or []
    if cluster < len(sizes):
        title += f": {sizes[cluster]:,} images ({sizes[cluster] / sum(sizes):.0%})"
    main = main_classes(meta.get("label_histogram"), cluster, names, MAIN_CLASS_SHARE)
    if main:
        title += ", mostly " + ", ".join(f"{name} {share:.0%}" for name, share in main)
    return title
