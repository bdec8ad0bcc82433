"""`paris train-router RUN`: learn p(cluster | x_t, t) with cross-entropy, independently of every expert.

The router needs only the data and the partition (not the experts), so it can train before, after or
alongside them. A held-out share of the data measures its accuracy per band of t: near t=1 the image is
almost pure noise and the best possible accuracy falls to the largest cluster's share.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from paris import layout
from paris import progress
from paris.config import RunConfig, router_config
from paris.data.store import Store, load_store
from paris.errors import ParisError
from paris.flow import interpolate, noisy_sample
from paris.models.io import load_pretrained
from paris.models.router import Router
from paris.clusters.partition import load_partition
from paris.run import RunDir
from paris.randomness import BatchRandom, step_generator
from paris.train.init_from import load_initial_weights
from paris.train.loop import Job, train

T_BANDS = [(0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0)]


def train_router(run: RunDir, config: RunConfig) -> dict:
    cfg = config.router
    store, part = load_store(run), load_partition(run)
    order = torch.randperm(len(store), generator=step_generator(cfg.seed, -1, -1))
    n_val = max(1, int(len(store) * cfg.val_fraction)) if len(store) > 1 else 0
    val, train_index = order[:n_val], order[n_val:]
    c, h, _ = store.manifest["latent_shape"]
    torch.manual_seed(cfg.seed)
    model = Router(router_config(cfg.preset, in_channels=c, input_size=h, num_experts=part.num_clusters,
                                 text_dim=store.text_dim if cfg.use_text else 0))
    identity = {"partition_hash": part.meta["hash"], "num_experts": part.num_clusters}
    if cfg.init_from:
        identity.update(load_initial_weights(run, model, cfg.init_from, cfg.init_fresh_head))
    steps = cfg.steps or math.ceil(cfg.epochs * len(train_index) / cfg.batch_size)
    progress.say(f"router: {len(train_index)} images ({n_val} held out), {part.num_clusters} clusters, "
                  f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {steps} steps")
    targets = part.assignments[store.rows]  # the cluster of each sample, in the store's order

    def loss(model, index, random, device):
        rows = train_index[index]
        x_t, t, _ = noisy_sample(store.latents[rows].to(device), cfg.t_distribution, random)
        text = {k: v.to(device) for k, v in _text(store, rows, cfg.use_text, device).items()}
        return F.cross_entropy(model(x_t, t, **text).float(), targets[rows].to(device))

    job = Job("router", layout.ROUTER, model, loss, len(train_index), identity)
    summary = train(run, job, dataclasses.replace(cfg, steps=steps))
    accuracy = router_accuracy(load_pretrained(run, layout.final(layout.ROUTER)), store, val, targets[val], cfg.use_text, cfg.seed)
    run.write_json(layout.ROUTER_ACCURACY, accuracy)
    return {**summary, "accuracy": accuracy}


@torch.no_grad()
def router_accuracy(model: Router, store: Store, rows: torch.Tensor, targets: torch.Tensor,
                    use_text: bool, seed: int) -> dict:
    """Top-1 accuracy of the router on held-out samples, for t drawn uniformly inside each band."""
    if len(rows) == 0:
        raise ParisError("no held-out images to measure the router on; raise router.val_fraction")
    model.eval()
    random = BatchRandom(len(rows), step_generator(seed, -2, -2))
    bands = {}
    for lo, hi in T_BANDS:
        x0 = store.latents[rows]
        t = lo + (hi - lo) * random.uniform()
        x_t = interpolate(x0, random.normal(*x0.shape[1:]), t)
        predicted = model(x_t, t, **_text(store, rows, use_text)).argmax(1)
        bands[f"{lo:.1f}-{hi:.1f}"] = (predicted == targets).float().mean().item()
    largest = torch.bincount(targets).max().item() / len(targets)
    return {"bands": bands, "mean": sum(bands.values()) / len(bands), "held_out": len(rows), "chance": largest}


def _text(store: Store, rows: torch.Tensor, use_text: bool, device="cpu") -> dict:
    if not use_text:
        return {}
    text, mask = store.text(rows, device=device)
    return {"text": text, "text_mask": mask}
