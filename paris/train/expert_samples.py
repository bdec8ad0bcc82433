"""`paris sample-expert RUN --expert K --num N`: images expert K draws, so a router can train without the data.

A router trained on the data needs every cluster's images in one place, which groups that cannot pool their data
cannot give. Instead each expert's owner draws N images from their own expert, prompted with N captions of their
own cluster, and publishes only those: experts/<K>/samples/, a shard set (latents, the prompts' text, captions).
`paris train-router RUN --from-expert-samples N` learns p(expert | x_t, t) from the K sets and never opens data/
(DDM, arXiv 2501.05450, names this as future work). What leaves the owner is generated images and the prompts used.

Each shard's prompts and noise come from seeds fixed by (sample.seed, expert, shard), so a job killed midway
resumes at the first missing shard and the same request makes the same bytes; the manifest is written last.
"""

from __future__ import annotations

import hashlib
import json
import math

import torch

from paris import layout
from paris import progress
from paris.clusters.export import load_cluster
from paris.config import RunConfig
from paris.data.shard_reader import TRAINING_COLUMNS, shard_refs
from paris.data.shard_format import read_manifest, shard_entry, shard_name, write_shard
from paris.data.store import Store
from paris.errors import ParisError
from paris.randomness import step_generator
from paris.run import RunDir

SHARD = 1000  # samples per shard: what a killed job loses at most


def sample_expert(run: RunDir, config: RunConfig, expert: int, num: int, batch_size: int = 100,
                  device: str = "cpu") -> dict:
    """Draw `num` images from expert `expert` alone (the run's sample settings, no router) into
    experts/<expert>/samples; returns its manifest."""
    from paris.inference.pipeline import ParisPipeline  # sampling code: only this command needs it

    if num < 1:
        raise ParisError(f"--num must be at least 1, got {num}")
    part, store = load_cluster(run, expert)  # the owner's own data: the prompts are its captions
    pipe = ParisPipeline.from_run(run.url, device=device, expert=expert)
    trained = run.read_json(f"{layout.final(layout.expert(expert))}/manifest.json")
    settings = {"steps": config.sample.steps, "guidance": config.sample.guidance, "sampler": config.sample.sampler,
                "shift": config.sample.shift, "seed": config.sample.seed}
    stamp = hashlib.sha256(json.dumps([trained, settings], sort_keys=True).encode()).hexdigest()[:16]
    prefix, data = layout.expert_samples(expert), read_manifest(run)
    text_ids = data["text_storage"] == "tokens"
    entries = []
    with progress.bar(f"expert {expert} samples", num, unit="images") as bar:
        for index in range(math.ceil(num / SHARD)):
            size = min(SHARD, num - index * SHARD)
            done = _complete(run, prefix, index, size, stamp)
            if done is None:
                generator = step_generator(config.sample.seed, expert, index)
                prompts = store.batch(torch.randint(len(store), (size,), generator=generator)).captions
                latents = []
                for first in range(0, size, batch_size):
                    seed = int(torch.randint(2**62, (1,), generator=generator))
                    x, _ = pipe.generate(prompts[first : first + batch_size], strategy="top1", seed=seed, decode=False,
                                         on_step=None)
                    latents.append(x.half())
                    bar.update(advance=len(x))
                ids, mask = pipe.mixture.text_encoder.tokenize(prompts)
                text = {"text_ids": ids} if text_ids else {"text_states": pipe.mixture.text_encoder.encode_tokens(ids, mask).half()}
                tensors = {"latents": torch.cat(latents), "labels": torch.full((size,), expert), "text_mask": mask, **text}
                meta = {"captions": prompts, "keys": [f"{expert}/{index}/{i}" for i in range(size)], "skipped": {},
                        "fingerprint": stamp, "positions": size}
                done = write_shard(run, prefix, index, tensors, meta)
            else:
                bar.update(advance=size)
            entries.append(done)
    kept = ("latent_shape", "text_dim", "max_tokens", "text_storage", "encoders", "empty_text", "class_names")
    manifest = {**{key: data.get(key) for key in kept}, "expert": expert, "count": num, "shards": entries,
                "fingerprint": stamp, "sample": settings, "cluster_hash": part.meta["cluster_hashes"][expert]}
    run.write_json(layout.manifest(prefix), manifest)  # last
    return manifest


def _complete(run: RunDir, prefix: str, index: int, size: int, stamp: str) -> dict | None:
    """The manifest entry of shard `index` when it is on storage, whole, of this size and of these settings."""
    rel = f"{layout.shards(prefix)}/{shard_name(index)}"
    entry = shard_entry(run, rel, index) if run.exists(rel) else None
    return entry if entry is not None and entry["fingerprint"] == stamp and entry["count"] == size else None


def published(run: RunDir, expert: int) -> int:
    """How many samples expert `expert` has published (0 when none)."""
    prefix = layout.expert_samples(expert)
    return run.read_json(layout.manifest(prefix))["count"] if run.exists(layout.manifest(prefix)) else 0


def expert_samples_store(run: RunDir, num_experts: int, per_expert: int | list[int],
                         text: bool = True) -> tuple[Store, torch.Tensor]:
    """The first `per_expert` samples of every expert's samples/ (one count for all, or one per expert) as one
    store, and the expert of each of its rows (the router's target). Reads experts/<k>/samples only."""
    counts = per_expert if isinstance(per_expert, list) else [per_expert] * num_experts
    manifests = []
    for k, wanted in enumerate(counts):
        have = published(run, k)
        if have < wanted:
            raise ParisError(f"expert {k} has published {have} samples, fewer than the {wanted} asked for; "
                             f"its owner runs `paris sample-expert {run.url} --expert {k} --num {wanted}`")
        manifests.append(read_manifest(run, layout.expert_samples(k)))
    storage = {json.dumps([m["text_storage"], m["encoders"]], sort_keys=True) for m in manifests}
    if len(storage) > 1:
        raise ParisError("the experts' samples were written with different text encoders or text storage; "
                         "draw them again from the run's current config")
    shards = [{**entry, "prefix": layout.expert_samples(k)} for k, m in enumerate(manifests) for entry in m["shards"]]
    combined = {**manifests[0], "shards": shards, "count": sum(m["count"] for m in manifests)}
    keep = torch.cat([torch.arange(m["count"]) < wanted for m, wanted in zip(manifests, counts)])
    experts = torch.cat([torch.full((m["count"],), k) for k, m in enumerate(manifests)])
    columns = TRAINING_COLUMNS if text else ("latents", "labels")
    return Store(run, combined, shard_refs(combined, "", keep), columns), experts
