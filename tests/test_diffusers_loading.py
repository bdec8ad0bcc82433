"""diffusers loads paris's networks with paris's strict loader: a damaged folder is one ParisError naming the file
and what is wrong, through DiffusersDiT.from_pretrained and DiffusionPipeline.from_pretrained alike, never a
network with random weights; a good folder loads the same tensors as paris's own loader."""

from __future__ import annotations

import shutil

import pytest
import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file, save_file

from paris.errors import ParisError
from paris.models.diffusers_model import DiffusersDiT, DiffusersRouter
from paris.models.io import WEIGHTS, load_pretrained
from paris.run import RunDir

DAMAGED = "expert_1"


def _copy(three_experts, tmp_path):
    return shutil.copytree(three_experts, tmp_path / "pipeline")


def _load_both_ways(folder, **options):
    """Every way diffusers loads the damaged network; each must fail."""
    for load in (lambda: DiffusersDiT.from_pretrained(str(folder / DAMAGED), **options),
                 lambda: DiffusionPipeline.from_pretrained(str(folder), trust_remote_code=True, **options)):
        with pytest.raises(ParisError) as error:
            load()
        yield str(error.value)


def _remove(state):
    del state["t_block.1.bias"]
    return "missing t_block.1.bias"


def _add(state):
    state["extra.weight"] = torch.zeros(2)
    return "unexpected extra.weight"


def _reshape(state):
    state["final_layer.linear.weight"] = state["final_layer.linear.weight"][:3]
    return r"final_layer.linear.weight has shape (3, 32), expected"


@pytest.mark.parametrize("damage", [_remove, _add, _reshape])
def test_weights_that_do_not_fit_are_one_error_naming_the_file_and_the_tensor(three_experts, tmp_path, damage):
    folder = _copy(three_experts, tmp_path)
    weights = folder / DAMAGED / WEIGHTS
    state = load_file(weights)
    problem = damage(state)
    save_file(state, weights)
    for message in _load_both_ways(folder):
        assert f"weights in {weights} do not fit the model" in message and problem in message
        assert "\n" not in message


def test_a_pickle_is_refused_and_never_unpickled(three_experts, tmp_path):
    folder = _copy(three_experts, tmp_path)
    weights = folder / DAMAGED / WEIGHTS
    torch.save(load_file(weights), weights.with_suffix(".bin"))
    weights.unlink()
    for message in _load_both_ways(folder):
        assert (f"{folder / DAMAGED} has no {WEIGHTS}, only diffusion_pytorch_model.bin: pickle checkpoints are "
                "refused") in message


def test_asking_for_pickle_weights_or_a_variant_is_refused(three_experts, tmp_path):
    folder = _copy(three_experts, tmp_path)
    with pytest.raises(ParisError, match="does not take use_safetensors=False"):
        DiffusersDiT.from_pretrained(str(folder / DAMAGED), use_safetensors=False)
    # A whole pipeline: diffusers 0.42 loads the transformers components (tokenizer, text encoder) before paris's
    # networks, and transformers refuses first, finding no pickle of the text encoder: still never a pickle loaded.
    with pytest.raises((ParisError, OSError), match="use_safetensors=False|no file named model.safetensors"):
        DiffusionPipeline.from_pretrained(str(folder), trust_remote_code=True, use_safetensors=False)
    with pytest.raises(ParisError, match="does not take variant"):
        DiffusersDiT.from_pretrained(str(folder / DAMAGED), variant="fp16")
    with pytest.raises(ParisError, match="would split a paris network"):
        DiffusersDiT.from_pretrained(str(folder / DAMAGED), device_map="auto")


def test_a_folder_holding_another_network_is_refused(three_experts):
    with pytest.raises(ParisError, match="router holds a Router, which DiffusersDiT cannot load"):
        DiffusersDiT.from_pretrained(str(three_experts), subfolder="router")


def _same_tensors(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_good_folder_loads_what_paris_loads(three_experts):
    pipe = DiffusionPipeline.from_pretrained(str(three_experts), trust_remote_code=True)
    run = RunDir(str(three_experts))
    for name in ["expert_0", "expert_1", "expert_2", "router"]:
        assert _same_tensors(getattr(pipe, name).state_dict(), load_pretrained(run, name).state_dict())
    router = DiffusersRouter.from_pretrained(str(three_experts), subfolder="router", dtype=torch.bfloat16)
    assert not router.training and router.config._name_or_path == str(three_experts)
    assert {t.dtype for t in [*router.parameters(), *router.buffers()]} == {torch.bfloat16}


def test_a_hub_repository_loads_from_the_hub_cache(three_experts, tmp_path):
    """An "owner/name" that is no local path is a Hub repository, read here from a cache laid out as the Hub's."""
    commit = "0" * 40
    repo = tmp_path / "cache" / "models--paris--tiny"
    shutil.copytree(three_experts / "expert_2", repo / "snapshots" / commit / "expert_2")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    model = DiffusersDiT.from_pretrained("paris/tiny", subfolder="expert_2", cache_dir=str(tmp_path / "cache"),
                                         local_files_only=True)
    assert _same_tensors(model.state_dict(), load_pretrained(RunDir(str(three_experts)), "expert_2").state_dict())


def test_neither_a_folder_nor_a_hub_repository_is_one_error(tmp_path):
    with pytest.raises(ParisError, match="no-such/pipeline is no folder here, and no Hub repository could be had"):
        DiffusersDiT.from_pretrained("no-such/pipeline", subfolder="expert_0", cache_dir=str(tmp_path))
