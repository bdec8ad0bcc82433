"""No loader of paris can be fooled: every damaged weights file (testkit.damage: real safetensors bytes, cut or
altered, or a pickle under the safetensors name) is one ParisError naming the file, through each way in (a paris
folder, diffusers, convert-release, --init-from); release configs and encoder files are checked by type; an output
never overlaps its input and is written whole or not at all."""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file, save_file

from paris.errors import ParisError
from paris.inference.pipeline import ParisPipeline, convert_release
from paris.models.diffusers_model import DiffusersDiT
from paris.models.io import WEIGHTS, load_pretrained
from paris.run import RunDir
from testkit.damage import DAMAGES, damage
from testkit.release import write_release

EXPERT = "expert_1"


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("release") / "release"
    write_release(root)
    return root


def _one_line(error: pytest.ExceptionInfo, *needles: str) -> str:
    message = str(error.value)
    assert "\n" not in message and all(needle in message for needle in needles), message
    return message


@pytest.mark.parametrize("name", DAMAGES)
def test_a_damaged_paris_folder_is_one_error_for_paris_and_diffusers(three_experts, tmp_path, name):
    folder = shutil.copytree(three_experts, tmp_path / "pipeline")
    weights = folder / EXPERT / WEIGHTS
    words = damage(weights, name)
    with pytest.raises(ParisError) as error:
        load_pretrained(RunDir(str(folder)), EXPERT)
    _one_line(error, str(weights), words)
    with pytest.raises(ParisError) as error:
        DiffusersDiT.from_pretrained(str(folder / EXPERT))
    _one_line(error, str(weights), words)


@pytest.mark.parametrize("name", DAMAGES)
def test_a_damaged_release_is_refused_before_anything_is_written(release, tmp_path, name):
    root = shutil.copytree(release, tmp_path / "release")
    words = damage(root / EXPERT / "diffusion_pytorch_model.safetensors", name)
    with pytest.raises(ParisError) as error:
        convert_release(str(root), str(tmp_path / "out"))
    _one_line(error, f"{root}/{EXPERT}/diffusion_pytorch_model.safetensors", words)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", DAMAGES)
def test_a_damaged_init_from_is_one_error(release, tmp_path, name):
    from paris.config import DiTConfig
    from paris.models.dit import DiT
    from paris.train.init_from import load_initial_weights

    folder = shutil.copytree(release / EXPERT, tmp_path / "start")
    words = damage(folder / WEIGHTS, name)
    model = DiT(DiTConfig(input_size=8, in_channels=4, patch_size=2, hidden_size=32, depth=2, num_heads=4, text_dim=32))
    with pytest.raises(ParisError) as error:
        load_initial_weights(RunDir(str(tmp_path)), model, str(folder))
    _one_line(error, str(folder / WEIGHTS), words)


def test_whole_diffusers_pipeline_refuses_a_damaged_expert(three_experts, tmp_path):
    folder = shutil.copytree(three_experts, tmp_path / "pipeline")
    damage(folder / EXPERT / WEIGHTS, "cut-in-data")
    with pytest.raises(ParisError, match="cut short"):
        DiffusionPipeline.from_pretrained(str(folder), trust_remote_code=True)


def test_weights_of_integers_are_refused_not_cast(three_experts, tmp_path):
    folder = shutil.copytree(three_experts, tmp_path / "pipeline")
    weights = folder / EXPERT / WEIGHTS
    state = load_file(weights)
    state["t_block.1.bias"] = state["t_block.1.bias"].long()
    save_file(state, weights)
    with pytest.raises(ParisError, match="t_block.1.bias is torch.int64, expected floating point"):
        load_pretrained(RunDir(str(folder)), EXPERT)


# --- encoders: the same strictness through paris's pipeline and diffusers' --------------------------------------
def _missing_tensor(folder):
    weights = folder / "text_encoder" / "model.safetensors"
    state = load_file(weights)
    del state[sorted(state)[3]]
    save_file(state, weights, metadata={"format": "pt"})
    return "do not fit its config.json: missing"


def _pickled(folder):
    weights = folder / "text_encoder" / "model.safetensors"
    torch.save(load_file(weights), folder / "text_encoder" / "pytorch_model.bin")
    weights.unlink()
    return "only pytorch_model.bin: pickle checkpoints are refused"


def _cut(folder):
    return damage(folder / "text_encoder" / "model.safetensors", "cut-in-header")


def _config_a_list(folder):
    (folder / "text_encoder" / "config.json").write_text("[1, 2]")
    return "holds a JSON list, not an object"


def _tokenizer_cut(folder):
    (folder / "tokenizer" / "tokenizer.json").write_text('{"version": "1.0", "trunc')
    return "tokenizer.json is not valid JSON"


def _tokenizer_of_nothing(folder):
    (folder / "tokenizer" / "tokenizer.json").write_text('{"model": {"type": "NoSuchModel"}}')
    return "cannot load the tokenizer in"


@pytest.mark.parametrize("damaged", [_missing_tensor, _pickled, _cut, _config_a_list, _tokenizer_cut,
                                     _tokenizer_of_nothing])
def test_damaged_encoder_files_are_one_error(three_experts, tmp_path, damaged):
    """Through paris's pipeline; the text encoder's weights through diffusers' too (it loads the tokenizer with
    transformers, as any diffusers pipeline)."""
    folder = shutil.copytree(three_experts, tmp_path / "pipeline")
    words = damaged(folder)
    loads = [lambda: ParisPipeline.from_pretrained(str(folder))]
    if damaged in (_missing_tensor, _pickled, _cut):
        loads.append(lambda: DiffusionPipeline.from_pretrained(str(folder), trust_remote_code=True))
    for load in loads:
        with pytest.raises(ParisError) as error:
            load()
        _one_line(error, words)


# --- release configs, typed ----------------------------------------------------------------------------------
@pytest.mark.parametrize("file, change, words", [
    ("config.json", {"num_experts": "2"}, "num_experts' must be int, got '2'"),
    ("config.json", {"image_size": 0}, "image_size' must be at least 1, got 0"),
    ("config.json", {"use_latents": "yes"}, "use_latents' must be bool"),
    (f"{EXPERT}/config.json", {"hidden_size": 32.5}, "hidden_size' must be int"),
    (f"{EXPERT}/config.json", {"num_heads": 5}, "hidden_size 32 is not a multiple of num_heads 5"),
    (f"{EXPERT}/config.json", {"patch_size": 3}, "input_size 8 is not a multiple of patch_size 3"),
    (f"{EXPERT}/config.json", {"out_channels": [4]}, "out_channels' must be int"),
    ("router/config.json", {"num_layers": None}, "num_layers' must be int"),
    ("vae/config.json", {"scaling_factor": "0.18"}, "scaling_factor' must be float"),
])
def test_release_config_values_of_the_wrong_type_are_one_error(release, tmp_path, file, change, words):
    root = shutil.copytree(release, tmp_path / "release")
    config = json.loads((root / file).read_text())
    (root / file).write_text(json.dumps({**config, **change}))
    with pytest.raises(ParisError) as error:
        ParisPipeline.from_pretrained(str(root))
    _one_line(error, str(root / file), words)


# --- outputs ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("out", [".", "converted", ".."])
def test_an_output_overlapping_its_input_is_refused_and_the_input_kept(release, tmp_path, out):
    root = shutil.copytree(release, tmp_path / "release")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with pytest.raises(ParisError, match="the input"):
        convert_release(str(root), str(root / out))
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def _write_limited(args: list[str], limit: int) -> subprocess.CompletedProcess:
    """`paris ARGS` in a process that may write no file beyond `limit` bytes: its writes fail as on a full disk
    (EFBIG; SIGXFSZ ignored, as a full disk sends no signal)."""
    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "paris", *args], capture_output=True, text=True, timeout=300,
                          preexec_fn=limited)


@pytest.mark.slow  # processes
def test_a_write_that_fails_is_one_line_and_leaves_nothing(release, three_experts, tmp_path):
    result = _write_limited(["convert-release", str(release), str(tmp_path / "out")], 4096)
    assert result.returncode == 2 and result.stderr.startswith("error: cannot write"), result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert list(tmp_path.iterdir()) == []  # no half-written folder, no temporary left
    result = _write_limited(["generate", str(three_experts), "-p", "a bag", "--steps", "1", "--out",
                             str(tmp_path / "x.png")], 64)
    assert result.returncode == 2 and "error: cannot write" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []
