"""`paris distill RUN`: one student DiT that draws what the mixture draws, in one pass per step (DDM's distillation).

A mixture of K experts holds K experts' weights and, with top-2, runs two experts per step (four with guidance).
The student is one ordinary DiT (any preset; by default the experts' own) trained by the shared training loop
(paris.train.loop) on the flow-matching objective, with the teacher's velocity as its target at the same
(x_t, t, caption) in place of noise - x0 (paris.train.teacher: the mixture under a routing rule, or each
sample's own expert). Its x0 and captions come from the run's data, or with `source` expert-samples only from
what the experts published (`paris sample-expert`), so someone who holds none of the raw data can make it.

With `guidance_distill` the student also takes the guidance scale as input, drawn per sample from
`guidance_range`, and learns the guided velocity against the empty prompt: one pass per step instead of two.
It writes student/ (student-NAME/), a job folder like monolith/: ParisPipeline.from_run(RUN, model="student"),
`paris generate RUN --model student`, `paris evaluate RUN --strategies student` and save_pretrained load it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from paris import layout
from paris import progress
from paris.config import DistillConfig, RunConfig, dit_config
from paris.data.store import Store, load_store
from paris.errors import ParisError
from paris.flow import noisy_sample
from paris.models.dit import DiT
from paris.run import RunDir
from paris.train.expert_samples import expert_samples_store, published
from paris.train.init_from import load_initial_weights
from paris.train.loop import Job, train
from paris.train.teacher import Teacher


def distill(run: RunDir, config: RunConfig, name: str = "") -> dict:
    """Train the student of `config.distill` into student/ (with `name`, student-NAME/); resumes like any job."""
    cfg, folder = config.distill, layout.student(name)
    if not run.exists(layout.PARTITION_META):
        raise ParisError(f"{run.url} has no partition, so no experts to distil; {layout.next_step('partition')}")
    meta = run.read_json(layout.PARTITION_META)
    teacher = Teacher(run, cfg.teacher, config.sample, meta["num_clusters"])
    store, clusters, trained_on = _source(run, cfg, meta)
    c, h, _ = store.latent_shape
    torch.manual_seed(cfg.seed)
    guidance_range = list(cfg.guidance_range) if cfg.guidance_distill else None
    model = DiT(dit_config(cfg.preset or config.expert.preset, in_channels=c, input_size=h, text_dim=store.text_dim,
                           guidance_range=guidance_range))
    identity = {**teacher.identity(), "source": cfg.source, **trained_on, "partition_hash": meta["hash"],
                "cluster_size": len(store)}
    if cfg.init_from:
        identity.update(load_initial_weights(run, model, cfg.init_from, cfg.init_fresh_head))
    progress.say(f"{folder}: {len(store)} {'generated ' if cfg.source != 'data' else ''}images, teacher "
                 f"{cfg.teacher}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {cfg.steps} "
                 f"steps of {cfg.batch_size}" + (f", guidance {guidance_range} as input" if guidance_range else ""))
    loss = distillation_loss(store, clusters, teacher, cfg)
    return train(run, Job(folder, folder, model, loss, store, identity), cfg)


def distillation_loss(store: Store, clusters: torch.Tensor, teacher: Teacher, cfg: DistillConfig):
    """The loss of a micro-batch: |student(x_t, t, caption[, s]) - teacher(x_t, t, caption[, s])|^2, with x_t
    drawn as flow matching draws it, the caption dropped as the experts drop it, s from guidance_range."""
    from paris.inference.velocity import conditioning  # sampling code: only a distillation needs it

    low, high = cfg.guidance_range

    def loss(model, index, random, device):
        batch = store.batch(index)
        x_t, t, _ = noisy_sample(batch.latents.to(device).float(), cfg.t_distribution, random)
        text, mask = store.text(batch, drop=random.uniform() < cfg.caption_dropout, device=device)
        negative, negative_mask = store.text(batch, drop=torch.ones(len(batch), dtype=torch.bool), device=device)
        scale = low + (high - low) * random.uniform() if cfg.guidance_distill else None
        cond = conditioning(text, mask, negative, negative_mask, device, scale)
        target = teacher(x_t, t, cond, clusters[batch.rows])
        guidance = {"guidance": cond.scale} if cfg.guidance_distill else {}
        return F.mse_loss(model(x_t, t, cond.text, cond.mask, **guidance).float(), target.float())

    return loss


def _source(run: RunDir, cfg: DistillConfig, meta: dict) -> tuple[Store, torch.Tensor, dict]:
    """The samples the student trains on, the cluster of each (indexed by a batch's rows), and what the summary
    records of them: the run's data and partition, or the experts' published samples, in the proportions of
    the clusters' sizes so the student sees the data's mixture of clusters."""
    if cfg.source == "data":
        from paris.clusters.partition import load_partition

        return load_store(run), load_partition(run).assignments, {}
    counts = expert_sample_counts(run, meta["sizes"])
    store, experts = expert_samples_store(run, len(counts), counts)
    return store, experts, {"expert_samples": counts}


def expert_sample_counts(run: RunDir, sizes: list[int]) -> list[int]:
    """Per expert, how many of its published samples to use: the most that keep the clusters' proportions."""
    have = [published(run, k) for k in range(len(sizes))]
    for k, count in enumerate(have):
        if count == 0:
            raise ParisError(f"expert {k} has published no samples, and --source expert-samples reads only those; "
                             f"its owner runs `paris sample-expert {run.url} --expert {k} --num N` (or distil "
                             "with --source data)")
    scale = min(count / size for count, size in zip(have, sizes))
    return [max(1, int(scale * size)) for size in sizes]
