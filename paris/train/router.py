"""`paris train-router RUN`: learn p(cluster | x_t, t) with cross-entropy, independently of every expert.

The router needs only the data and the partition (not the experts), so it can train before, after or
alongside them; or, where the data cannot be pooled, only images the experts drew (--from-expert-samples). A
held-out share measures its accuracy per band of t: near t=1 the image is almost pure noise and the best
possible accuracy falls to the largest cluster's share.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from paris import layout
from paris import progress
from paris.config import RunConfig, router_config
from paris.data.store import Batch, Store, load_store
from paris.errors import ParisError
from paris.flow import interpolate, noisy_sample
from paris.models.io import load_pretrained
from paris.models.router import Router
from paris.clusters.partition import load_partition
from paris.run import RunDir
from paris.randomness import BatchRandom, step_generator
from paris.train.expert_samples import expert_samples_store
from paris.train.init_from import load_initial_weights
from paris.train.loop import Job, train

T_BANDS = [(0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0)]
VAL_MOST = 10_000  # held-out images at most: enough for accuracy to the nearest 1%, cheap at any data size
# Held-out images scored at once. At 1,024 the tiny router's activations (+490 MB) outweighed training's, and
# glibc's heap grew with each such batch: peak RSS rose with the held-out count, i.e. with the data, up to VAL_MOST.
# At 256 scoring takes less memory than a training step (+115 MB, the same after every batch).
VAL_BATCH = 256


def train_router(run: RunDir, config: RunConfig, from_expert_samples: int | None = None, name: str = "") -> dict:
    """Train the router on the run's data and partition or, with `from_expert_samples` N, on the first N images
    each expert published (paris.train.expert_samples), without reading data/ at all. `name`: train router-<name>/
    (layout.router), another router of the same experts, instead of router/."""
    cfg = config.router
    if from_expert_samples is None:
        part = load_partition(run)
        meta, store, targets = part.meta, load_store(run, text=cfg.use_text), part.assignments
        trained_on = {}
    else:
        meta = run.read_json(layout.PARTITION_META)  # K and the partition's hash; the data's files are not read
        store, targets = expert_samples_store(run, meta["num_clusters"], from_expert_samples, cfg.use_text)
        trained_on = {"expert_samples": from_expert_samples}
    k = meta["num_clusters"]
    train_store, held_out = store.split(cfg.val_fraction, cfg.seed, VAL_MOST)
    torch.manual_seed(cfg.seed)
    c, h, _ = train_store.latent_shape
    model = Router(router_config(cfg.preset, in_channels=c, input_size=h, num_experts=k,
                                 text_dim=train_store.text_dim if cfg.use_text else 0))
    identity = {"partition_hash": meta["hash"], "num_experts": k, **trained_on}
    if cfg.init_from:
        identity.update(load_initial_weights(run, model, cfg.init_from, cfg.init_fresh_head))
    steps = cfg.steps or math.ceil(cfg.epochs * len(train_store) / cfg.batch_size)
    progress.say(f"router: {len(train_store)} {'generated ' if trained_on else ''}images ({len(held_out)} held out), "
                  f"{k} clusters, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {steps} steps")

    def loss(model, index, random, device):
        batch = train_store.batch(index)
        x_t, t, _ = noisy_sample(batch.latents.to(device).float(), cfg.t_distribution, random)
        text = {k: v.to(device) for k, v in _text(train_store, batch, cfg.use_text, device).items()}
        return F.cross_entropy(model(x_t, t, **text).float(), targets[batch.rows].to(device))

    folder = layout.router(name)
    job = Job(folder, folder, model, loss, train_store, identity)
    summary = train(run, job, dataclasses.replace(cfg, steps=steps))
    accuracy = router_accuracy(load_pretrained(run, layout.final(folder)), held_out, targets, cfg.use_text, cfg.seed)
    run.write_json(layout.router_accuracy(name), accuracy)
    return {**summary, "accuracy": accuracy}


@torch.no_grad()
def router_accuracy(model: Router, held_out: Store, assignments: torch.Tensor, use_text: bool, seed: int) -> dict:
    """Top-1 accuracy of the router on held-out samples, for t drawn uniformly inside each band."""
    if len(held_out) == 0:
        raise ParisError("no held-out images to measure the router on; raise router.val_fraction")
    model.eval()
    generator = step_generator(seed, -2, -2)
    right = torch.zeros(len(T_BANDS))
    counts = torch.zeros(model.architecture.num_experts)  # held-out images per cluster: the chance level
    for first in range(0, len(held_out), VAL_BATCH):
        batch = held_out.batch(torch.arange(first, min(first + VAL_BATCH, len(held_out))))
        targets, x0 = assignments[batch.rows], batch.latents.float()
        counts += torch.bincount(targets, minlength=len(counts))
        random = BatchRandom(len(batch), generator)
        for band, (lo, hi) in enumerate(T_BANDS):
            t = lo + (hi - lo) * random.uniform()
            x_t = interpolate(x0, random.normal(*x0.shape[1:]), t)
            right[band] += (model(x_t, t, **_text(held_out, batch, use_text)).argmax(1) == targets).sum()
    bands = {f"{lo:.1f}-{hi:.1f}": (r / len(held_out)).item() for (lo, hi), r in zip(T_BANDS, right)}
    return {"bands": bands, "mean": sum(bands.values()) / len(bands), "held_out": len(held_out),
            "chance": (counts.max() / len(held_out)).item()}


def _text(store: Store, batch: Batch, use_text: bool, device="cpu") -> dict:
    if not use_text:
        return {}
    text, mask = store.text(batch, device=device)
    return {"text": text, "text_mask": mask}
