"""How far clusters of each image feature follow the Fashion-MNIST classes: pixel-PCA against SimCLR encoders
(paris.models.simclr) trained at several temperatures, clustering the backbone's or the head's output.

Every row: features of the 60,000 training images, plain k-means (faiss, 20 iterations, best of 3 starts, seed 0)
at K = 4 and 8, and the normalised mutual information with the labels. The recipe's choices (temperature, which
layer) come from this table; `paris partition` (hierarchical k-means) gives the figures of docs/demo.md.

    .venv/bin/python benchmarks/learned_features.py                       # about 8 minutes on 2 cores
    .venv/bin/python benchmarks/learned_features.py --temperatures 0.5 --steps 500,1500
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from paris.data import fashion_mnist
from paris.models import simclr
from paris.models.encoders import PixelPCA


def nmi_at(features: np.ndarray, labels: np.ndarray, k: int) -> float:
    import faiss
    from sklearn.metrics import normalized_mutual_info_score

    kmeans = faiss.Kmeans(features.shape[1], k, niter=20, seed=0, nredo=3)
    kmeans.train(np.ascontiguousarray(features))
    _, assigned = kmeans.index.search(np.ascontiguousarray(features), 1)
    return normalized_mutual_info_score(labels, assigned[:, 0])


@torch.no_grad()
def embed(model: simclr.SimCLREncoder, images: torch.Tensor, layer: str) -> np.ndarray:
    parts = []
    for i in range(0, len(images), 2000):
        x = simclr.resize(images[i : i + 2000])
        parts.append(model(x) if layer == "head" else F.normalize(model.backbone(x), dim=1))
    return torch.cat(parts).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--temperatures", default="0.2,0.5,1.0")
    parser.add_argument("--steps", default=str(simclr.STEPS), help="Comma-separated training lengths.")
    args = parser.parse_args()
    torch.set_num_threads(2)
    images, labels = fashion_mnist.load(args.data, "train")
    y = labels.numpy()
    pca = PixelPCA(images[:10_000], 64, 0)  # as `paris prepare` fits it
    rows = [("pixel-PCA (64 dims)", "-", 0.0, pca(images).numpy())]
    for steps in [int(s) for s in args.steps.split(",")]:
        for temperature in [float(t) for t in args.temperatures.split(",")]:
            started = time.perf_counter()
            model = simclr.train_simclr(images, steps, temperature=temperature).eval()
            seconds = time.perf_counter() - started
            for layer in ("backbone", "head"):
                rows.append((f"SimCLR T={temperature:g}, {layer}", str(steps), seconds, embed(model, images, layer)))
    print("| features | steps | training s | NMI K=4 | NMI K=8 |\n|---|---|---|---|---|")
    for name, steps, seconds, features in rows:
        print(f"| {name} | {steps} | {seconds:.0f} | {nmi_at(features, y, 4):.3f} | {nmi_at(features, y, 8):.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
