"""CLIP score against a hand computation with the model, and evaluate on a run that is not Fashion-MNIST:
held-out reference images with captions, FID and CLIP score per strategy, no adherence."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from testkit.runs import assert_user_error, run_cli
from testkit.tiny_encoders import caption, tiny_models, write_folder, write_tar
from paris.models.clip_score import ClipScore
from paris.errors import ParisError
from paris.evaluate.reference import load_reference

TEXTS = ["a red car", "picture number 3 of a thing", "two dogs", "x" * 300, "a bag", "sky", "a tree", "a blue door"]


@pytest.fixture(scope="module")
def clip():
    return ClipScore(tiny_models()["clip_model"])


def test_clip_score_is_the_clamped_cosine_times_100(clip):
    """Computed by hand from the model's image and text features; negative cosines count as 0."""
    from transformers import AutoTokenizer, CLIPImageProcessorPil

    path = tiny_models()["clip_model"]
    pixels = np.random.default_rng(0).integers(0, 256, (len(TEXTS), 40, 48, 3), dtype=np.uint8)
    processor, tokenizer = CLIPImageProcessorPil.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        image = clip.model.get_image_features(**processor([Image.fromarray(p) for p in pixels], return_tensors="pt"))
        tokens = tokenizer(TEXTS, padding=True, truncation=True, max_length=77, return_tensors="pt")
        text = clip.model.get_text_features(**tokens)
    cosine = F.cosine_similarity(image.pooler_output, text.pooler_output)
    assert (cosine < 0).any() and (cosine > 0).any()  # both cases are exercised
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1  # what the PNGs would hold
    scores = clip.pairs(images, TEXTS)
    assert torch.allclose(scores, 100 * cosine.clamp(min=0), atol=1e-4)
    assert (scores[cosine < 0] == 0).all()
    assert clip(images, TEXTS) == pytest.approx(scores.mean().item())


def test_a_grayscale_image_scores_as_its_rgb_copy(clip):
    gray = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert torch.allclose(clip.pairs(gray, TEXTS[:3]), clip.pairs(gray.expand(-1, 3, -1, -1), TEXTS[:3]))


def test_clip_model_directory_errors(tmp_path):
    with pytest.raises(ParisError, match="not found.*openai/clip-vit-large-patch14"):
        ClipScore(str(tmp_path / "nowhere"))
    with pytest.raises(ParisError, match="'clip_text_model' model, not clip"):
        ClipScore(tiny_models()["clip"])  # the text encoder alone
    incomplete = tmp_path / "no-processor"
    shutil.copytree(tiny_models()["clip_model"], incomplete)
    (incomplete / "preprocessor_config.json").unlink()
    with pytest.raises(ParisError, match="lacks its tokenizer or image processor"):
        ClipScore(str(incomplete))


def test_reference_skips_broken_and_uncaptioned_images(laion_trained, tmp_path):
    folder = write_folder(tmp_path / "ref", 5)
    (folder / "0000a.jpg").write_bytes(b"not a jpeg")  # sorts between 0000 and 0001
    (folder / "0000a.txt").write_text("broken")
    shutil.copy(folder / "0001.jpg", folder / "0001a.jpg")  # no caption beside it
    real = load_reference(laion_trained["config"], 4, str(folder), "folder")
    assert real.prompts == [caption(i) for i in range(4)] and real.labels is None
    assert real.images.shape == (4, 3, 64, 64) and real.images.abs().max() <= 1


def test_reference_is_read_as_the_runs_source_by_default(laion_trained, tmp_path):
    held_out = write_tar(tmp_path / "held-out" / "00000.tar", 100, 5)  # the run's source: webdataset
    real = load_reference(laion_trained["config"], 3, str(held_out))
    assert real.prompts == [caption(i) for i in range(100, 103)] and real.where == f"webdataset {held_out}"


def test_reference_mistakes_are_one_line_errors(laion_trained, tmp_path):
    config = laion_trained["config"]
    with pytest.raises(ParisError, match="gave 1 usable images"):
        load_reference(config, 4, str(write_folder(tmp_path / "one", 1)), "folder")
    with pytest.raises(ParisError, match="--reference-source folder needs --reference"):
        load_reference(config, 4, "", "folder")
    with pytest.raises(ParisError, match="unknown --reference-source 'zip'"):
        load_reference(config, 4, str(tmp_path), "zip")
    fashion = dataclasses.replace(config, data=dataclasses.replace(config.data, source="fashion-mnist",
                                                                   path="/usr/share/datasets/fashion-mnist"))
    real = load_reference(fashion, 3)  # a Fashion-MNIST run: its test split by default, asked for by class
    assert real.prompts[0] == "a photo of a ankle boot" and real.labels.tolist() == [9, 2, 1]


def test_cli_evaluate_without_reference_on_a_webdataset_run(laion_trained):
    result = run_cli("evaluate", str(laion_trained["path"]), "--strategies", "top1", "--num-samples", "4")
    assert_user_error(result, "webdataset run", "--reference PATH_OR_URL")


def test_evaluate_a_webdataset_run_against_held_out_tars(laion_trained, tmp_path):
    """FID and CLIP score per strategy; no adherence (no classes); the reference's own CLIP score beside them."""
    run_path = tmp_path / "run"
    shutil.copytree(laion_trained["path"], run_path)
    held_out = write_folder(tmp_path / "held-out", 5)
    result = run_cli("evaluate", str(run_path), "--strategies", "top1,full", "--num-samples", "4", "--steps", "2",
                     "--clip-model", tiny_models()["clip_model"], "--reference", str(held_out),
                     "--reference-source", "folder")
    assert result.returncode == 0, result.stderr
    report = json.loads((run_path / "eval" / "report.json").read_text())
    rows = report["strategies"]
    assert report["num_samples"] == 4 and report["reference"] == f"folder {held_out}"
    assert all(r["fid"] > 0 and 0 <= r["clip_score"] <= 100 and "prompt_adherence" not in r for r in rows.values())
    assert rows["top1"]["expert_passes_per_image_step"] == 1 and rows["full"]["expert_passes_per_image_step"] == 2
    assert "classifier_test_accuracy" not in report
    real = load_reference(laion_trained["config"], 4, str(held_out), "folder")
    assert report["reference_clip_score"] == pytest.approx(ClipScore(tiny_models()["clip_model"])(real.images, real.prompts))
    table = (run_path / "eval" / "report.md").read_text()
    assert table.strip() in result.stdout  # the command prints the table it wrote
    assert "| strategy | FID | CLIP score | expert passes / image / step | s / image |" in table
    assert f"| full | {rows['full']['fid']:.2f} | {rows['full']['clip_score']:.2f} |" in table
    assert (run_path / "eval" / "report.png").exists()
