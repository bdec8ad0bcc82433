"""Loss curves from the metrics that every training job writes (paris.train.metrics)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display on servers
import matplotlib.pyplot as plt  # noqa: E402

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
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    run.write_bytes(rel, buffer.getvalue())
