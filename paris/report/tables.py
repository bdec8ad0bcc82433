"""The tables the `paris` command prints, built from what the stages return (rich renderables)."""

from __future__ import annotations

from rich.table import Table

from paris.clusters.partition import main_classes


def partition_table(meta: dict, class_names: list[str] | None) -> Table:
    """Cluster sizes and, when the data has labels, each cluster's main classes and how far the clusters follow
    the classes (partition/meta.json)."""
    table = Table(title=f"partition: {meta['num_clusters']} clusters ({meta['method']})",
                  caption=_agreement(meta.get("label_agreement"), class_names))
    table.add_column("cluster", justify="right")
    table.add_column("images", justify="right")
    table.add_column("share", justify="right")
    table.add_column("classes (each >= 5%)")
    total = sum(meta["sizes"])
    for k, size in enumerate(meta["sizes"]):
        shown = main_classes(meta["label_histogram"], k, class_names, MAIN_CLASS_SHARE)
        table.add_row(str(k), str(size), f"{size / total:.1%}", ", ".join(f"{name} {share:.0%}" for name, share in shown))
    return table


def _agreement(agreement: dict | None, names: list[str] | None) -> str | None:
    """'NMI with the labels 0.61; share of a class in its main cluster: 72% on average, 40% at least (shirt)'."""
    if agreement is None:
        return None
    shares = {c: s for c, s in enumerate(agreement["in_main_cluster"]) if s is not None}
    worst = min(shares, key=shares.get)
    return (f"NMI with the labels {agreement['nmi']:.2f}; share of a class in its main cluster: "
            f"{sum(shares.values()) / len(shares):.0%} on average, {shares[worst]:.0%} at least "
            f"({names[worst] if names else f'label {worst}'})")


MAIN_CLASS_SHARE = 0.05  # a class is named in a cluster's row when it holds at least this share of the cluster


def router_accuracy_table(accuracy: dict) -> Table:
    """The router's held-out accuracy per band of t (router/accuracy.json)."""
    table = Table(title=f"router accuracy on {accuracy['held_out']} held-out images",
                  caption=f"always guessing the largest cluster: {accuracy['chance']:.1%}")
    for band in accuracy["bands"]:
        table.add_column(f"t {band}", justify="right")
    table.add_column("mean", justify="right")
    table.add_row(*(f"{a:.1%}" for a in accuracy["bands"].values()), f"{accuracy['mean']:.1%}")
    return table


STATE_COLOURS = {"done": "green", "running": "cyan", "stale": "red", "outdated": "red", "not started": "dim",
                 "retired": "dim"}


def status_table(rows: list[dict], url: str) -> Table:
    """One row per training job (paris.roster.status.run_status)."""
    table = Table(title=f"paris status: {url}")
    for column in ("job", "step", "loss", "samples/s", "last checkpoint", "state", "newest preview"):
        table.add_column(column, justify="left" if column in ("job", "state", "newest preview") else "right")
    for r in rows:
        table.add_row(
            r["job"],
            f"{r['step']} / {r['target'] or '?'}",
            "-" if r["loss"] is None else f"{r['loss']:.4f}",
            "-" if r["samples_per_s"] is None else f"{r['samples_per_s']:.0f}",
            "-" if r["checkpoint_age_s"] is None else f"{_age(r['checkpoint_age_s'])} ago",
            f"[{STATE_COLOURS[r['state']]}]{r['state']}",
            r["preview"] or "-",
        )
    return table


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def demo_table(report: dict) -> Table:
    """The demo's quick table: cost and prompt adherence per routing strategy (paris.demo.run_demo)."""
    table = Table(title=f"paris demo: {report['images_per_strategy']} images per strategy",
                  caption=f"classifier test accuracy {report['classifier_test_accuracy']:.1%}; router accuracy "
                          f"{report['router_accuracy']['mean']:.1%} (mean over t); {report['minutes']:.1f} min in all")
    table.add_column("strategy")
    table.add_column("s / image", justify="right")
    table.add_column("expert passes / image / step", justify="right")
    table.add_column("prompt adherence", justify="right")
    rows = report["strategies"]
    attributes = all("attribute_adherence" in row for row in rows.values())
    if attributes:
        table.add_column("attribute adherence", justify="right")
    table.add_column("differs from top1", justify="right")
    for strategy, row in rows.items():
        table.add_row(strategy, f"{row['seconds_per_image']:.3f}", f"{row['expert_passes_per_image_step']:.2f}",
                      f"{row['prompt_adherence']:.1%}", *([f"{row['attribute_adherence']:.1%}"] if attributes else []),
                      f"{row['difference_from_top1']:.4f}" if "difference_from_top1" in row else "-")
    return table
