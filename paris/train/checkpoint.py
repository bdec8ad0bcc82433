"""Training checkpoints in the run directory: safetensors for tensors, JSON for the rest, LATEST written last.

    <folder>/ckpt/00001000/{model,ema,optimizer}.safetensors + state.json (step, config, sha256 of each file)
    <folder>/LATEST  ->  {"step": 1000, "path": "ckpt/00001000"}
A killed job leaves at worst a checkpoint folder without a LATEST pointing at it, which is ignored; a
checkpoint whose files do not match their recorded hashes is skipped for the one before it. There is no
RNG or data-loader state: every draw is a function of (seed, step) (paris.randomness).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from paris import progress
from paris.errors import ParisError
from paris.models.io import load_state_dict_strict
from paris.run import RunDir


def save_checkpoint(run: RunDir, folder: str, step: int, model: nn.Module, ema: nn.Module,
                    optimizer: torch.optim.Optimizer, state: dict, keep: int) -> None:
    path = f"ckpt/{step:08d}"
    optim_tensors, param_groups = _flatten_optimizer(optimizer)
    keys = trained_keys(model)
    parts = {"model": _kept(model, keys), "ema": _kept(ema, keys), "optimizer": optim_tensors}
    hashes = {part: run.save_tensors(f"{folder}/{path}/{part}.safetensors", tensors) for part, tensors in parts.items()}
    run.write_json(f"{folder}/{path}/state.json",
                   {**state, "step": step, "param_groups": param_groups, "sha256": hashes, "time": time.time()})
    run.write_json(f"{folder}/LATEST", {"step": step, "path": path})
    for old in run.list(f"{folder}/ckpt")[:-keep]:
        run.remove(f"{folder}/ckpt/{old}")


def load_latest(run: RunDir, folder: str, model: nn.Module, ema: nn.Module,
                optimizer: torch.optim.Optimizer, identity: dict) -> dict | None:
    """Restore the newest readable checkpoint into the given objects; its state.json, or None if there is none.

    `identity` (model shape, partition, cluster) must equal the checkpoint's: resuming a different job is refused.
    """
    if not run.exists(f"{folder}/LATEST"):
        return None
    try:
        latest = run.read_json(f"{folder}/LATEST")["path"].rsplit("/", 1)[-1]
    except (ParisError, KeyError, TypeError, AttributeError):  # a damaged pointer: the checkpoints themselves decide
        progress.say(f"{run.url}/{folder}/LATEST is damaged; resuming from the newest readable checkpoint", warning=True)
        latest = "~"  # sorts after every checkpoint name
    candidates = [c for c in reversed(run.list(f"{folder}/ckpt")) if c <= latest]
    for name in candidates:
        path = f"{folder}/ckpt/{name}"
        try:
            state = run.read_json(f"{path}/state.json")
            tensors = {part: run.load_tensors(f"{path}/{part}.safetensors", digest)
                       for part, digest in state["sha256"].items()}
        except (ParisError, ValueError, KeyError) as e:
            progress.say(f"skipping unreadable checkpoint {run.url}/{path}: {e}", warning=True)
            continue
        _check_identity(state.get("identity", {}), identity, f"{run.url}/{path}")
        keys = trained_keys(model)
        load_state_dict_strict(model, tensors["model"], f"{run.url}/{path}", keys=keys)
        load_state_dict_strict(ema, tensors["ema"], f"{run.url}/{path}", keys=keys)
        _load_optimizer(optimizer, tensors["optimizer"], state["param_groups"])
        return state
    raise ParisError(f"no readable checkpoint under {run.url}/{folder}/ckpt; delete {run.url}/{folder} to start over")


def trained_keys(model: nn.Module) -> set[str] | None:
    """The entries of the model's state a checkpoint holds: None, all of them; where some parameters are frozen
    (a LoRA's base, read again from its own file when the job resumes), only those that train."""
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    return None if len(trained) == len(list(model.parameters())) else trained


def _kept(model: nn.Module, keys: set[str] | None) -> dict:
    return {key: value for key, value in model.state_dict().items() if keys is None or key in keys}


def _check_identity(saved: dict, current: dict, where: str) -> None:
    changed = [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in sorted(saved.keys() | current.keys())
               if saved.get(k) != current.get(k)]
    if changed:
        raise ParisError(f"refusing to resume from {where}, which was made for a different job ({'; '.join(changed)}); "
                         "restore the old settings or delete that folder to start over")


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    state = optimizer.state_dict()
    tensors = {f"{index}.{name}": value for index, entry in state["state"].items() for name, value in entry.items()}
    return tensors, state["param_groups"]


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], param_groups: list) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})
