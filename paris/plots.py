"""Loss curves from the metrics.jsonl files that every training job writes."""

from __future__ import annotations

import io
import json

import matplotlib

matplotlib.use("Agg")  # no display on servers
import matplotlib.pyplot as plt  # noqa: E402

from paris.run import RunDir  # noqa: E402


def plot_loss_curves(run: RunDir, folders: list[str], rel: str) -> None:
    """One line per training job (e.g. experts/0, router), loss against step, saved as a PNG at `rel`."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for folder in folders:
        path = f"{folder}/metrics.jsonl"
        if not run.exists(path):
            continue
        records = [json.loads(line) for line in run.read_text(path).splitlines() if line]
        ax = axes[1] if folder == "router" else axes[0]
        ax.plot([r["step"] for r in records], [r["loss"] for r in records], label=folder)
    axes[0].set(title="experts: flow-matching loss", xlabel="step", ylabel="MSE")
    axes[1].set(title="router: cross-entropy", xlabel="step", ylabel="CE")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    run.write_bytes(rel, buffer.getvalue())
