"""`paris remove-expert RUN --expert k`: take an expert out of the model without retraining anything.

The expert is retired, not deleted: sampling never loads it, and the router's probabilities are renormalised over
the other experts (paris.inference.sampler), the same rule that covers an expert whose files are missing or unreadable.
RUN/retired.json lists the retired experts; `--restore` brings one back.
"""

from __future__ import annotations

from paris import layout
from paris.errors import ParisError
from paris.run import RunDir


def retired_experts(run: RunDir) -> list[int]:
    """The experts `paris remove-expert` retired from the run (none when it was never used): what every command
    that samples, lists or saves the run's experts reads retirement through."""
    if not run.exists(layout.RETIRED):
        return []
    listed = run.read_json(layout.RETIRED)
    experts = listed.get("experts") if isinstance(listed, dict) else None
    if not isinstance(experts, list) or not all(isinstance(k, int) and k >= 0 for k in experts):
        raise ParisError(f"{run.url}/{layout.RETIRED} is damaged (it holds {{\"experts\": [numbers]}}); delete it to "
                         f"bring every expert back, then retire again with `paris remove-expert {run.url} --expert K`")
    return sorted(set(experts))


def remove_expert(run: RunDir, expert: int, restore: bool = False) -> list[int]:
    """Retire `expert` (or with `restore`, bring it back); returns the retired experts."""
    k = run.read_json(layout.PARTITION_META)["num_clusters"]
    if not 0 <= expert < k:
        raise ParisError(f"expert {expert} does not exist: the run has experts 0..{k - 1}")
    retired = set(retired_experts(run))
    if restore:
        retired.discard(expert)
    else:
        retired.add(expert)
    if len(retired) >= k:
        raise ParisError(f"removing expert {expert} would leave no expert to sample with; restore another first")
    run.write_json(layout.RETIRED, {"experts": sorted(retired)})
    return sorted(retired)
