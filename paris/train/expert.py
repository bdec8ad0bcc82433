"""`paris train-expert RUN --expert K`: train ONE expert on ONE cluster, in complete isolation.

Reads the run's data and partition; writes only under experts/K/. It never looks at, waits for or talks to
any other expert, so the K experts can run anywhere, at any time, in any order (the point of Paris).
"""

from __future__ import annotations

import dataclasses

import torch
from rich.console import Console

from paris.config import RunConfig, dit_config
from paris.data.store import Store, load_store
from paris.errors import ParisError
from paris.flow import flow_matching_loss
from paris.models.dit import DiT
from paris.partition import load_partition
from paris.run import RunDir
from paris.train.loop import Job, train

console = Console(stderr=True)


def train_expert(run: RunDir, config: RunConfig, expert: int) -> dict:
    part = load_partition(run)
    if not 0 <= expert < part.num_clusters:
        raise ParisError(f"expert {expert} does not exist: the partition has clusters 0..{part.num_clusters - 1}")
    store = load_store(run, cluster=expert)  # only this cluster's samples are read
    if len(store) == 0:
        raise ParisError(f"cluster {expert} is empty; re-run `paris partition` with fewer clusters")
    identity = {"cluster": expert, "partition_hash": part.meta["hash"], "cluster_size": len(store)}
    return _train_flow_model(run, config, store, f"expert {expert}", f"experts/{expert}", identity,
                             config.expert.steps, seed=config.expert.seed + expert)  # experts start differently


def train_monolith(run: RunDir, config: RunConfig) -> dict:
    """The baseline of the paper's table: one model on all the data at matched compute, i.e. as many
    training samples as the K experts together (K x expert.steps steps of the same batch)."""
    part = load_partition(run)
    store = load_store(run)
    identity = {"cluster": "all", "partition_hash": part.meta["hash"], "cluster_size": len(store)}
    return _train_flow_model(run, config, store, "monolith", "monolith", identity,
                             config.expert.steps * part.num_clusters, seed=config.expert.seed)


def _train_flow_model(run: RunDir, config: RunConfig, store: Store, name: str, folder: str, identity: dict,
                      steps: int, seed: int) -> dict:
    cfg = dataclasses.replace(config.expert, steps=steps)
    latents = store.latents
    c, h, _ = store.manifest["latent_shape"]
    torch.manual_seed(seed)
    model = DiT(dit_config(cfg.preset, in_channels=c, input_size=h, text_dim=store.text_dim))
    console.print(f"[bold]{name}[/]: {len(store)} images, "
                  f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {cfg.steps} steps")

    def loss(model, index, random, device):
        dropped = random.uniform() < cfg.caption_dropout
        text, mask = store.text(index, drop=dropped)
        return flow_matching_loss(model, latents[index].to(device), cfg.t_distribution, random,
                                  text=text.to(device), text_mask=mask.to(device))

    return train(run, Job(name, folder, model, loss, len(store), identity), cfg)
