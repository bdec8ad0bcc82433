"""`paris train-expert RUN --expert K`: train ONE expert on ONE cluster, in complete isolation.

Reads the run's data and partition; writes only under experts/K/. It never looks at, waits for or talks to
any other expert, so the K experts can run anywhere, at any time, in any order (the point of Paris).
"""

from __future__ import annotations

import dataclasses

import torch

from paris import layout
from paris import progress
from paris.config import ExpertTrainConfig, RunConfig, dit_config
from paris.clusters.export import load_cluster
from paris.clusters.partition import load_partition
from paris.data.store import Store, load_store
from paris.errors import ParisError
from paris.flow import flow_matching_loss
from paris.models.dit import DiT
from paris.models.io import save_pretrained
from paris.models.layers import attention_mask
from paris.models.lora import attach, lora_config, save_adapter
from paris.run import RunDir
from paris.train.init_from import base_identity, load_initial_weights
from paris.train.loop import Job, train
from paris.train.preview import previewer


def train_expert(run: RunDir, config: RunConfig, expert: int) -> dict:
    part, store = load_cluster(run, expert)  # only this cluster's samples are read
    if len(store) == 0:
        raise ParisError(f"cluster {expert} is empty; re-run `paris partition` with fewer clusters")
    # Its cluster's hash, not the partition's: adding data or experts later leaves this expert valid (paris.roster.grow).
    identity = {"cluster": expert, "cluster_hash": part.meta["cluster_hashes"][expert], "cluster_size": len(store)}
    cfg = dataclasses.replace(config.expert, steps=expert_steps(config, part.meta, expert))
    return _train_flow_model(run, config, cfg, store, f"expert {expert}", layout.expert(expert), identity,
                             seed=cfg.seed + expert)  # experts start differently


def expert_steps(config: RunConfig, partition_meta: dict, expert: int) -> int:
    """expert.steps, or with expert.steps_by_size its share of the K experts' steps, by cluster size."""
    e, sizes = config.expert, partition_meta["sizes"]
    return round(e.steps * len(sizes) * sizes[expert] / sum(sizes)) if e.steps_by_size else e.steps


def baseline_schedule(config: RunConfig, num_experts: int) -> tuple[int, int]:
    """(steps, batch) of the monolith: as many training samples as the K experts together.

    split-batch (DDM): the experts took the monolith's steps, each at 1/K of its batch, so it takes
    expert.steps steps of K x expert.batch_size. equal-batch: the experts took its batch, so it takes K x the
    steps. baseline.batch_size, when set, keeps the samples and trades steps for batch (a tuned baseline)."""
    e, b = config.expert, config.baseline
    samples = num_experts * e.steps * e.batch_size
    batch = b.batch_size or (num_experts * e.batch_size if b.protocol == "split-batch" else e.batch_size)
    if samples % batch:
        raise ParisError(f"baseline.batch_size {batch} does not divide the experts' {samples} training samples; "
                         f"choose a divisor of {samples}")
    return samples // batch, batch


def train_monolith(run: RunDir, config: RunConfig) -> dict:
    """The baseline of the paper's table: one model on all the data at matched compute (baseline_schedule).
    It starts where the experts start (expert.init_from), so a shared seed counts on both sides."""
    part = load_partition(run)
    steps, batch = baseline_schedule(config, part.num_clusters)
    store = load_store(run)
    identity = {"cluster": "all", "partition_hash": part.meta["hash"], "cluster_size": len(store),
                "protocol": config.baseline.protocol}
    cfg = dataclasses.replace(config.expert, steps=steps, batch_size=batch)
    return _train_flow_model(run, config, cfg, store, "monolith", layout.MONOLITH, identity, seed=cfg.seed)


def train_seed(run: RunDir, config: RunConfig, steps: int) -> dict:
    """A seed: the monolith's first `steps` steps (same batch, same recipe), from random weights, written to
    seed/. Experts that start from it (`--set expert.init_from=seed/final`) share it like a public checkpoint;
    its samples count in the budget of the comparison."""
    if steps < 1:
        raise ParisError(f"--steps must be at least 1, got {steps}")
    part = load_partition(run)
    _, batch = baseline_schedule(config, part.num_clusters)
    store = load_store(run)
    identity = {"cluster": "all", "partition_hash": part.meta["hash"], "cluster_size": len(store)}
    cfg = dataclasses.replace(config.expert, steps=steps, batch_size=batch, init_from=None, lora_rank=None)
    return _train_flow_model(run, config, cfg, store, "seed", layout.SEED, identity, seed=cfg.seed)


def _train_flow_model(run: RunDir, config: RunConfig, cfg: ExpertTrainConfig, store: Store, name: str, folder: str,
                      identity: dict, seed: int) -> dict:
    c, h, _ = store.latent_shape
    torch.manual_seed(seed)
    model = DiT(dit_config(cfg.preset, in_channels=c, input_size=h, text_dim=store.text_dim))
    if cfg.init_from:
        identity = {**identity, **load_initial_weights(run, model, cfg.init_from, cfg.init_fresh_head)}
    if cfg.lora_rank:  # after the base is in: the adapter starts from it, adding nothing
        identity["lora"] = {"rank": cfg.lora_rank, "targets": cfg.lora_targets, **base_identity(run, cfg.init_from)}
        attach(model, lora_config(cfg.lora_rank, cfg.lora_targets, identity["lora"]["base_url"]))
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    progress.say(f"{name}: {len(store)} images, {trained / 1e6:.2f}M parameters"
                 + (f" (a rank-{cfg.lora_rank} LoRA)" if cfg.lora_rank else "") + f", {cfg.steps} steps of "
                 f"{cfg.batch_size}" + (f", starting from {identity['init_from']}" if cfg.init_from else ""))

    def loss(model, index, random, device):
        batch = store.batch(index)
        text, mask = store.text(batch, drop=random.uniform() < cfg.caption_dropout, device=device)
        mask = attention_mask(mask)  # on the CPU still; None where every token is attended (CLIP)
        return flow_matching_loss(model, batch.latents.to(device).float(), cfg.t_distribution, random,
                                  text=text.to(device), text_mask=None if mask is None else mask.to(device))

    preview = previewer(run, config, store, folder)
    export = save_adapter if cfg.lora_rank else save_pretrained  # a LoRA publishes its adapter alone
    return train(run, Job(name, folder, model, loss, store, identity, preview, cfg.preview_every, export), cfg)
