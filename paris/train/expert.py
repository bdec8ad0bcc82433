"""`paris train-expert RUN --expert K`: train ONE expert on ONE cluster, in complete isolation.

Reads the run's data and partition; writes only under experts/K/. It never looks at, waits for or talks to
any other expert, so the K experts can run anywhere, at any time, in any order (the point of Paris).
"""

from __future__ import annotations

import torch
from rich.console import Console

from paris.config import RunConfig, dit_config
from paris.data.store import load_store
from paris.errors import ParisError
from paris.flow import flow_matching_loss
from paris.models.dit import DiT
from paris.partition import load_partition
from paris.run import RunDir
from paris.train.loop import Job, train

console = Console(stderr=True)


def train_expert(run: RunDir, config: RunConfig, expert: int) -> dict:
    cfg = config.expert
    part = load_partition(run)
    if not 0 <= expert < part.num_clusters:
        raise ParisError(f"expert {expert} does not exist: the partition has clusters 0..{part.num_clusters - 1}")
    store = load_store(run, cluster=expert)  # only this cluster's samples are read
    members = store.rows
    if len(members) == 0:
        raise ParisError(f"cluster {expert} is empty; re-run `paris partition` with fewer clusters")
    latents = store.latents
    c, h, _ = store.manifest["latent_shape"]
    torch.manual_seed(cfg.seed + expert)  # experts start from different initialisations
    model = DiT(dit_config(cfg.preset, in_channels=c, input_size=h, text_dim=store.text_dim))
    console.print(f"[bold]expert {expert}[/]: {len(members)} images, "
                  f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {cfg.steps} steps")

    def loss(model, index, generator):
        dropped = torch.rand(len(index), generator=generator) < cfg.caption_dropout
        text, mask = store.text(index, drop=dropped)
        return flow_matching_loss(model, latents[index], cfg.t_distribution, generator, text=text, text_mask=mask)

    identity = {"cluster": expert, "partition_hash": part.meta["hash"], "cluster_size": len(members)}
    return train(run, Job(f"expert {expert}", f"experts/{expert}", model, loss, len(members), identity), cfg)
