"""The charts the `paris` command draws into a run: loss curves from the metrics every training job writes
(paris.train.metrics), the evaluation's bars, and the routing heatmaps of `paris generate --show-routing`."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display on servers
import matplotlib.pyplot as plt  # noqa: E402

from paris import layout
from paris.run import RunDir  # noqa: E402
from paris.train.metrics import read_metrics  # noqa: E402


def plot_loss_curves(run: RunDir, panels: dict[str, list[str]], rel: str) -> None:
    """One panel per title, one line per training job folder in it (loss against step), saved as PNG at `rel`."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (title, folders) in zip(axes[0], panels.items()):
        for folder in folders:
            records = read_metrics(run, folder)
            ax.plot([r["step"] for r in records], [r["loss"] for r in records], label=folder)
        ax.set(title=title, xlabel="step", ylabel="loss")
        ax.grid(alpha=0.3)
        if len(folders) > 1:
            ax.legend()
    _save(fig, run, rel)


def write_routing(routing, prompts: list[str], stem) -> list[str]:
    """For each image, a heatmap of its expert weights (rows: sampling steps, columns: experts) as
    <stem>_routing_<i>.png, and all weights as <stem>_routing.json. Returns the paths written."""
    import json
    from pathlib import Path

    stem = Path(stem)
    paths = []
    for i, (weights, prompt) in enumerate(zip(routing, prompts)):
        fig, ax = plt.subplots(figsize=(2.5 + 0.5 * weights.shape[1], 4))
        image = ax.imshow(weights.numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.set(title=prompt[:40], xlabel="expert", ylabel="router call (t = 1 at the top)", xticks=range(weights.shape[1]))
        fig.colorbar(image, ax=ax, label="weight")
        fig.tight_layout()
        path = f"{stem}_routing_{i}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    json_path = f"{stem}_routing.json"
    Path(json_path).write_text(json.dumps({"prompts": prompts, "weights": routing.tolist()}))
    return paths + [json_path]


def router_weights_chart(run: RunDir, weights: list, times: list[float], titles: list[str], rel: str) -> None:
    """One panel per prompt: each expert's weight ([prompts][steps][K]) against t, from pure noise (t = 1, left)
    to the image (t = 0), saved as a PNG at `rel`. Where one line stays at 1 the router was sure all the way."""
    import numpy as np

    weights = np.asarray(weights)
    columns = min(5, len(titles))
    rows = -(-len(titles) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 2.4 * rows), sharex=True, sharey=True,
                             squeeze=False)
    for ax, panel, title in zip(axes.flat, weights, titles):
        for expert in range(panel.shape[1]):
            ax.plot(times, panel[:, expert], label=f"expert {expert}")
        ax.set(title=title, xlim=(1, 0), ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("t (1 = noise)")
    for ax in axes[:, 0]:
        ax.set_ylabel("router weight")
    for ax in axes.flat[len(titles):]:
        ax.axis("off")
    axes[0, -1].legend(fontsize="small", loc="center right")
    _save(fig, run, rel)


def evaluation_chart(run: RunDir, report: dict) -> None:
    """eval/report.png: FID, and adherence and CLIP score when measured, per strategy (from paris evaluate)."""
    panels = {"FID (lower is better)": "fid", "prompt adherence": "prompt_adherence", "CLIP score": "clip_score"}
    rows = report["strategies"]
    measured = next(iter(rows.values()))
    bar_chart(run, {title: {name: row[key] for name, row in rows.items()}
                    for title, key in panels.items() if key in measured}, layout.EVAL_CHART)


def bar_chart(run: RunDir, panels: dict[str, dict[str, float]], rel: str) -> None:
    """One panel per title, one bar per name in it, saved as a PNG at `rel`."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for ax, (title, values) in zip(axes[0], panels.items()):
        ax.bar(list(values), list(values.values()), color="tab:blue")
        ax.set(title=title)
        ax.grid(axis="y", alpha=0.3)
    _save(fig, run, rel)


def _save(fig, run: RunDir, rel: str) -> None:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    run.write_bytes(rel, buffer.getvalue())
