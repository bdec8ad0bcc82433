"""The public Paris release: a tiny synthetic release with the release's own names and config keys
(testkit.release) is converted, and paris's networks must compute what the release's compute."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from paris.inference import release
from paris.errors import ParisError
from paris.models.io import load_pretrained
from paris.inference.pipeline import ParisPipeline, convert_release
from paris.run import RunDir
from testkit.release import LATENT, TEXT_DIM, write_release
from testkit.runs import run_cli, run_paris

PROMPTS = ["a red bag", "a sneaker"]
SETTINGS = {"strategy": "top2", "steps": 3, "guidance": 7.5, "seed": 1}


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    experts, router = write_release(root, own_table=True)
    return root, experts, router


@pytest.fixture(scope="module")
def converted(released, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "paris"
    found = convert_release(str(released[0]), str(out))
    return out, found


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, *LATENT, generator=g), torch.tensor([0.0, 0.37, 1.0]), torch.randn(3, 7, TEXT_DIM, generator=g)


@pytest.mark.parametrize("timestep_map", ["1000t", "round(999t)"])
def test_converted_networks_compute_what_the_release_computes(released, timestep_map):
    root, experts, router = released
    folder = RunDir(str(root))
    config = release.root_config(folder)
    x, t, text = _inputs()
    timestep = 1000 * t if timestep_map == "1000t" else torch.round(999 * t)
    with torch.no_grad():
        for k, reference in enumerate(experts):
            ours = release.load_release_model(folder, release.expert_config(folder, k, config, timestep_map))
            torch.testing.assert_close(ours(x, t, text), reference(x, timestep, text), atol=2e-5, rtol=1e-5)
        ours = release.load_release_model(folder, release.router_config(folder, config, timestep_map))
        torch.testing.assert_close(ours(x, t), router(x, timestep), atol=2e-5, rtol=1e-5)


def test_pos_embed_equal_to_dits_table_is_dropped_and_another_kept(converted):
    out, found = converted
    assert [c.pos_embed for c in found] == ["its own table (kept)", "DiT's fixed table", "DiT's fixed table"]
    assert [c.config.pos_embed for c in found] == ["stored", "sincos", "sincos"]
    assert "x_embedder.pos_embed" in load_file(out / "expert_0" / "diffusion_pytorch_model.safetensors")
    assert "x_embedder.pos_embed" not in load_file(out / "expert_1" / "diffusion_pytorch_model.safetensors")


def test_converted_folder_loads_as_paris_models_computing_the_same(released, converted):
    root, experts, _ = released
    folder = RunDir(str(converted[0]))
    x, t, text = _inputs(1)
    with torch.no_grad():
        for k, reference in enumerate(experts):
            torch.testing.assert_close(load_pretrained(folder, f"expert_{k}")(x, t, text), reference(x, 1000 * t, text),
                                       atol=2e-5, rtol=1e-5)


def test_release_loads_directly_and_draws_what_the_converted_folder_draws(released, converted):
    direct, _ = ParisPipeline.from_pretrained(str(released[0])).generate(PROMPTS, **SETTINGS)
    saved, _ = ParisPipeline.from_pretrained(str(converted[0])).generate(PROMPTS, **SETTINGS)
    assert direct.shape == (2, 3, 64, 64) and direct.std() > 0.01
    torch.testing.assert_close(direct, saved)


def _damaged(released, tmp_path):
    """A copy of the release whose expert 1 has a renamed, a mis-shaped and a missing tensor."""
    import shutil

    root = tmp_path / "damaged"
    shutil.copytree(released[0], root)
    weights = root / "expert_1" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    state["layers.0.attn.o_proj.weight"] = state.pop("layers.0.attn.out_proj.weight")
    state["text_proj.weight"] = state["text_proj.weight"][:, :5].contiguous()
    del state["final_layer.linear.bias"]
    save_file(state, str(weights))
    return root


def test_a_release_that_does_not_fit_is_refused_with_every_problem_in_one_error(released, tmp_path):
    root = _damaged(released, tmp_path)
    folder = RunDir(str(root))
    component = release.expert_config(folder, 1, release.root_config(folder))
    with pytest.raises(ParisError) as error:
        release.load_release_model(folder, component)
    message = str(error.value)
    for needle in ("unmapped layers.0.attn.o_proj.weight", "missing blocks.0.attn.proj.weight",
                   "missing final_layer.linear.bias", "mis-shaped text_proj.weight: (32, 5) in the release, (32, 32)"):
        assert needle in message, message
    assert message.count("expert_1") == 1 and "\n" not in message


@pytest.mark.slow  # a process
def test_cli_converts_and_refuses_in_one_line(released, tmp_path):
    out = tmp_path / "paris"
    result = run_cli("convert-release", str(released[0]), str(out))  # a real process, as a user runs it
    assert result.returncode == 0, result.stderr
    assert "expert_0: 32-wide, 2 blocks, patch 2; position table: its own table (kept)" in result.stdout
    assert json.loads((out / "config.json").read_text())["num_experts"] == 2
    code, _, err = run_paris("convert-release", str(_damaged(released, tmp_path)), str(tmp_path / "x"))
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert "unmapped layers.0.attn.o_proj.weight" in err and "missing final_layer.linear.bias" in err
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_inspect_reads_the_headers_only(released, tmp_path):
    import shutil

    root = tmp_path / "headers-only"
    shutil.copytree(released[0], root)
    for weights in root.glob("*/*.safetensors"):  # cut every file right after its header: no tensor data left
        data = weights.read_bytes()
        weights.write_bytes(data[: 8 + int.from_bytes(data[:8], "little")])
    listing = release.inspect_release(str(root))
    assert sorted(listing) == ["expert_0/diffusion_pytorch_model.safetensors",
                               "expert_1/diffusion_pytorch_model.safetensors", "router/pytorch_model.safetensors"]
    assert ("layers.1.attn.in_proj_weight", "F32", (96, 32)) in listing["expert_0/diffusion_pytorch_model.safetensors"]
    assert ("cls_token", "F32", (1, 1, 32)) in listing["router/pytorch_model.safetensors"]


def test_a_release_expert_can_start_a_training_job(released):
    from paris.config import DiTConfig
    from paris.models.dit import DiT
    from paris.train.init_from import load_initial_weights

    root, experts, _ = released
    model = DiT(DiTConfig(input_size=8, in_channels=4, patch_size=2, hidden_size=32, depth=2, num_heads=4,
                          text_dim=TEXT_DIM)).eval()
    info = load_initial_weights(RunDir(str(root)), model, "expert_1")
    x, t, text = _inputs(2)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, text), experts[1](x, 1000 * t, text), atol=2e-5, rtol=1e-5)
    assert info["init_samples"] == 0


def test_a_release_on_an_object_store_converts_as_a_local_one(released, converted, s3_bucket, tmp_path):
    import fsspec

    fsspec.filesystem("s3").put(str(released[0]), f"{s3_bucket}/release", recursive=True)
    out = tmp_path / "from-s3"
    convert_release(f"{s3_bucket}/release", str(out))
    remote, _ = ParisPipeline.from_pretrained(str(out)).generate(PROMPTS, **SETTINGS)
    local, _ = ParisPipeline.from_pretrained(str(converted[0])).generate(PROMPTS, **SETTINGS)
    torch.testing.assert_close(remote, local)
