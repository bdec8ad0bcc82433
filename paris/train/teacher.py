"""The teacher of a distillation (`paris distill`): the mixture's velocity at given (x_t, t, caption).

It is computed by the very velocity_field that sampling integrates (paris.inference.velocity), under a routing
rule of the mixture (top2, full, ...), or `oracle`: each sample's own expert, the one of its cluster, as DDM
distils (one expert pass per sample, no router). The other sampling settings (min_weight, guidance_mode,
precision) are the run's, so the student learns what `paris generate` with that rule draws.
"""

from __future__ import annotations

import hashlib
import json

import torch

from paris import layout
from paris.config import SampleConfig
from paris.errors import ParisError
from paris.inference.routing import parse_strategy
from paris.run import RunDir

ORACLE = "oracle"  # each sample's own expert


class Teacher:
    def __init__(self, run: RunDir, rule: str, sample: SampleConfig, num_experts: int):
        """Checks that every expert the rule can use is trained; the mixture itself loads at the first call, on
        the device the student trains on."""
        self.run, self.rule, self.num_experts = run, rule, num_experts
        self.experts = _experts_used(run, rule, num_experts)
        if rule == ORACLE:  # one setting per expert: a sample's rows go to their own expert alone
            self.samples = [sample.updated(strategy=f"oracle:{k}") for k in range(num_experts)]
        else:
            self.samples = [sample.updated(strategy=rule)]
        self.mixture = None

    def identity(self) -> dict:
        """What a resumed distillation must match: the rule, and a digest of the trained models it reads."""
        folders = [layout.expert(k) for k in self.experts] + ([] if self.rule.startswith(ORACLE) else [layout.ROUTER])
        trained = [self.run.read_json(f"{layout.final(f)}/manifest.json") for f in folders
                   if self.run.exists(f"{layout.final(f)}/manifest.json")]
        digest = hashlib.sha256(json.dumps(trained, sort_keys=True).encode()).hexdigest()[:16]
        return {"teacher": self.rule, "teacher_hash": digest,
                "experts_samples_seen": sum(m["samples_seen"] for m in trained[: len(self.experts)])}

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond, clusters: torch.Tensor) -> torch.Tensor:
        """The mixture's velocity for rows x_t at times t [B] with conditioning `cond` (paris.inference.velocity;
        its `scale`, per row, when the guided velocity is the target); `clusters` [B]: each row's cluster, which
        the oracle rule uses."""
        from paris.inference.velocity import velocity_field  # sampling code: only a distillation needs it

        mixture = self._mixture(x_t.device)
        if self.rule != ORACLE:
            return velocity_field(mixture, cond, self.samples[0])(x_t, t)
        v = torch.empty_like(x_t)
        for k in clusters.unique().tolist():
            rows = (clusters == k).nonzero().squeeze(1)
            v[rows] = velocity_field(mixture, cond.rows(rows), self.samples[k])(x_t[rows], t[rows])
        return v

    def _mixture(self, device: torch.device):
        if self.mixture is None:
            from paris.inference.pipeline import ParisPipeline

            # The oracle asks no router: experts alone can teach.
            router = None if self.rule.startswith(ORACLE) else ""
            self.mixture = ParisPipeline.from_run(self.run.url, device=str(device), router=router).mixture
        return self.mixture


def _experts_used(run: RunDir, rule: str, num_experts: int) -> list[int]:
    """The experts the rule can route to, each checked to be trained: oracle:E uses one, every other rule all."""
    if rule != ORACLE:
        parse_strategy(rule, num_experts)  # oracle:E names an expert of the run, topk:K at most K of them
    trained = [k for k in range(num_experts) if run.exists(f"{layout.final(layout.expert(k))}/config.json")]
    if not trained:
        raise ParisError(f"{run.url} has no trained expert to distil; train them first with `paris train-expert "
                         f"{run.url} --expert K`")
    name, _, value = rule.partition(":")
    used = [int(value)] if name == ORACLE and value else list(range(num_experts))
    for k in used:
        if k not in trained:
            raise ParisError(f"--teacher {rule} needs expert {k}, which has no trained model at "
                             f"{run.url}/{layout.final(layout.expert(k))}; "
                             f"{layout.next_step(layout.expert(k))}, or choose a rule without it")
    return used
