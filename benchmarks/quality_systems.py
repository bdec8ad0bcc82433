"""The systems of benchmarks/quality_vs_compute.py: each row's recipe, and how a budget becomes steps and batches.

A budget is a number of training samples of the flow models, in multiples of BUDGET_SAMPLES (1x = the first demo's
4 experts x 1,800 steps x 64); a seed's samples count in it. A row's name ends in its budget (`-2x`).
"""

from __future__ import annotations

import dataclasses

BUDGET_SAMPLES = 4 * 1800 * 64  # 1x


@dataclasses.dataclass(frozen=True)
class System:
    name: str
    budget: float  # training samples, in multiples of BUDGET_SAMPLES (seed included)
    batch: int = 64  # the monolith's batch; split-batch experts take batch / K, equal-batch experts take batch
    kind: str = "mixture"  # mixture | monolith
    features: str = "pixel-pca"  # clustering: pixel-pca | simclr | text | labels (the oracle bound, K = 10)
    captions: str = "class"  # data.captions: class (one caption per class) | described (names and measured looks)
    clusters: int = 4
    protocol: str = "split-batch"
    seed_fraction: float = 0.0  # share of the budget spent on a seed trained on all the data
    text_router: bool = False  # DDM's router (sees the prompt) instead of Paris's
    both_routers: bool = False  # Paris's router in router/ and DDM's beside it in router-text/ (strategies RULE@text)
    by_size: bool = False  # expert.steps_by_size: each expert's steps in proportion to its cluster's size
    preset: str = "tiny"  # the flow models' size (expert.preset)
    lr: float = 5e-4  # the demo's; every row before the learning-rate rows used it, whatever its batch
    cooldown: float = 0.0  # expert.cooldown: share of the steps at the end over which the lr falls to 0

    @property
    def samples(self) -> int:
        return int(self.budget * BUDGET_SAMPLES)

    def label(self, strategy: str) -> str:
        """The row in words, for a chart's legend: 'one model, batch 64, lr 0.002, cooldown 50%' or '8 experts
        (batch 32 each) on simclr clusters, DDM's router, ...' (the budget is the chart's x axis)."""
        if self.kind == "monolith":
            words = [f"one model, batch {self.batch}"]
        else:
            s = self.schedule()
            router = "DDM's router" if self.text_router or "@" in strategy else "Paris's router"
            words = [f"{s['clusters']} experts (batch {s['expert_batch']} each) on {self.features} clusters, {router}"]
        words += [f"lr {self.lr:g}"] + ([f"cooldown {self.cooldown:.0%}"] if self.cooldown else [])
        words += [f"seed {self.seed_fraction:.0%}"] if self.seed_fraction else []
        words += ["steps by cluster size"] if self.by_size else []
        words += [f"{self.preset} models"] if self.preset != "tiny" else []
        words += ["described captions"] if self.captions != "class" else []
        return ", ".join(words)

    def schedule(self) -> dict:
        """Steps and batches: the seed's (at the monolith's batch) and each expert's."""
        seed_steps = round(self.samples * self.seed_fraction / self.batch)
        rest = self.samples - seed_steps * self.batch
        if self.kind == "monolith":
            # The run's partition has 4 clusters: train-monolith takes 4 x expert.steps x expert.batch_size samples.
            return {"seed_steps": 0, "expert_batch": self.batch, "expert_steps": rest // (4 * self.batch),
                    "monolith_batch": self.batch}
        k = 10 if self.features == "labels" else self.clusters
        batch = self.batch // k if self.protocol == "split-batch" else self.batch
        return {"seed_steps": seed_steps, "expert_batch": batch, "expert_steps": rest // (k * batch), "clusters": k}


def rows(budgets: list[float], which: str) -> list[System]:
    """The sweep: the core comparison at every budget, then one lever at a time at the middle budget; `k8`: the
    eight-expert rows alone."""
    if which == "k8":
        return k8_rows(budgets)
    out = []
    for b in budgets:
        x = f"{b:g}x"
        out += [System(f"monolith-b64-{x}", b, kind="monolith"), System(f"monolith-b16-{x}", b, 16, kind="monolith"),
                # The equal-batch counterpart of the split16 experts: their batch, all their steps.
                System(f"monolith-b4-{x}", b, 4, kind="monolith"),
                System(f"text-textrouter-{x}", b, features="text", text_router=True),
                # DDM's split of the batch-16 monolith: experts of batch 4 take its steps.
                System(f"text-textrouter-split16-{x}", b, 16, features="text", text_router=True)]
    if which == "all":
        for b in budgets:
            # Is a smaller batch better only because one learning rate served every batch? The linear scaling
            # rule (batch 16 at 5e-4 -> batch 64 at 2e-3) and the square-root one (1e-3).
            out += [System(f"monolith-b64-lr2e-3-{b:g}x", b, kind="monolith", lr=2e-3),
                    System(f"monolith-b64-lr1e-3-{b:g}x", b, kind="monolith", lr=1e-3),
                    System(f"monolith-b16-lr1e-3-{b:g}x", b, 16, kind="monolith", lr=1e-3),
                    # The experts of the batch-64 split (batch 16 each) at those learning rates too.
                    System(f"text-textrouter-lr2e-3-{b:g}x", b, features="text", text_router=True, lr=2e-3),
                    System(f"text-textrouter-lr1e-3-{b:g}x", b, features="text", text_router=True, lr=1e-3),
                    # Equal-batch experts (batch 64, a quarter of the monolith's steps): the cheapest on a CPU.
                    System(f"text-textrouter-equal-lr2e-3-{b:g}x", b, features="text", text_router=True,
                           protocol="equal-batch", lr=2e-3)]
            # The held-out loss puts the experts' deficit at low noise, where weight noise matters most, and at
            # batch 16 they carry more of it than the batch-64 monolith: the lr falls over the last 20% or 50%.
            for share in (0.2, 0.5):
                cd = f"cd{round(share * 100)}"
                out += [System(f"monolith-b64-lr2e-3-{cd}-{b:g}x", b, kind="monolith", lr=2e-3, cooldown=share),
                        System(f"text-textrouter-lr2e-3-{cd}-{b:g}x", b, features="text", text_router=True,
                               lr=2e-3, cooldown=share)]
        b = budgets[len(budgets) // 2]
        x = f"{b:g}x"
        out += [System(f"pixel-paris-{x}", b), System(f"pixel-textrouter-{x}", b, text_router=True),
                System(f"text-paris-{x}", b, features="text"),
                System(f"text-textrouter-bysize-{x}", b, features="text", text_router=True, by_size=True),
                # The best mixture so far (split16) with each expert's steps in proportion to its cluster.
                System(f"text-textrouter-split16-bysize-{x}", b, 16, features="text", text_router=True, by_size=True),
                # The best mixture so far, branched from a seed trained on all the data for 10% or 25% of the budget.
                System(f"text-textrouter-split16-bysize-seed10-{x}", b, 16, features="text", text_router=True,
                       by_size=True, seed_fraction=0.10),
                System(f"text-textrouter-split16-bysize-seed25-{x}", b, 16, features="text", text_router=True,
                       by_size=True, seed_fraction=0.25),
                # Capacity: the same two systems with a sixth of the parameters per model.
                System(f"monolith-b16-nano-{x}", b, 16, kind="monolith", preset="nano"),
                System(f"text-textrouter-split16-bysize-nano-{x}", b, 16, features="text", text_router=True,
                       by_size=True, preset="nano"),
                System(f"text-textrouter-equal-{x}", b, features="text", text_router=True, protocol="equal-batch"),
                System(f"text-textrouter-seed25-{x}", b, features="text", text_router=True, seed_fraction=0.25),
                System(f"text-textrouter-seed10-{x}", b, features="text", text_router=True, seed_fraction=0.10),
                System(f"text-textrouter-k2-{x}", b, features="text", text_router=True, clusters=2),
                System(f"text-textrouter-k8-{x}", b, features="text", text_router=True, clusters=8),
                System(f"labels-textrouter-{x}", b, 60, features="labels", text_router=True),
                # The best mixture (the split at lr 2e-3), one lever each: steps in proportion to cluster size
                # (its largest cluster holds five classes, half the data, which its expert then sees as often as
                # the monolith does); K = 2 and 8 (batch 32 and 8 each, the same steps); a 10% seed.
                System(f"text-textrouter-lr2e-3-bysize-{x}", b, features="text", text_router=True, by_size=True,
                       lr=2e-3),
                System(f"text-textrouter-lr2e-3-k2-{x}", b, features="text", text_router=True, clusters=2, lr=2e-3),
                System(f"text-textrouter-lr2e-3-k8-{x}", b, features="text", text_router=True, clusters=8, lr=2e-3),
                System(f"text-textrouter-lr2e-3-seed10-{x}", b, features="text", text_router=True, seed_fraction=0.10,
                       lr=2e-3)]
    return out


def k8_rows(budgets: list[float]) -> list[System]:
    """K = 8 at DDM's split, where DDM (K = 8 of DiT-XL/2, 0.77x) and Paris (0.76x) win: eight experts of batch 32
    take the steps of a monolith of batch 256, against the strongest monolith measured (batch 64, lr 2e-3 falling
    over the last half), on captions that describe each image. Each mixture is scored with both routers of the
    same experts; labels (ten clusters of batch 32) are the bound on the clustering."""
    recipe = {"captions": "described", "lr": 2e-3, "cooldown": 0.5, "features": "simclr"}
    out = []
    for b in budgets:
        x = f"{b:g}x"
        out += [System(f"described-monolith-b64-lr2e-3-cd50-{x}", b, kind="monolith", **recipe),
                System(f"simclr-k8-split256-lr2e-3-cd50-{x}", b, 256, clusters=8, both_routers=True, **recipe),
                System(f"labels-k10-split320-lr2e-3-cd50-{x}", b, 320, both_routers=True,
                       **{**recipe, "features": "labels"})]
    return out
