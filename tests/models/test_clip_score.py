"""CLIP score against a hand computation with the model, and the errors for a CLIP directory that is not one."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from testkit.tiny_encoders import tiny_models
from paris.errors import ParisError
from paris.models.clip_score import ClipScore

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
