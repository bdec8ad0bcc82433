"""The self-supervised image features (data.features: simclr): the loss, the views, what training learns, the
machine cache and its key, and prepare with them (every part of a data set encoded by one encoder)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from testkit.runs import FASHION_MNIST, tiny_config
from paris.cache import machine_cache
from paris.data import fashion_mnist
from paris.data.merge import merge
from paris.data.prepare import prepare
from paris.data.shard_reader import read_columns
from paris.errors import ParisError
from paris.models import simclr
from paris.run import RunDir


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return fashion_mnist.load(FASHION_MNIST, "train", 256)[0]


def test_nt_xent_is_the_cross_entropy_of_finding_the_partner():
    """N orthonormal embeddings as both views: each view's partner scores 1/T, the 2N-2 others 0."""
    n, temperature = 4, 0.5
    a = torch.eye(n)
    expected = -math.log(math.exp(1 / temperature) / (math.exp(1 / temperature) + 2 * n - 2))
    assert simclr.nt_xent(a, a.clone(), temperature).item() == pytest.approx(expected, rel=1e-6)
    swapped = simclr.nt_xent(a, a[[1, 0, 2, 3]], temperature)  # two partners wrong: a higher loss
    assert swapped.item() > expected + 0.5


def test_views_are_a_function_of_the_generator_and_stay_images(images):
    x = images[:16]
    first = simclr.augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(first, simclr.augment(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, simclr.augment(x, torch.Generator().manual_seed(2)))
    assert first.shape == x.shape and first.min() >= -1 and first.max() <= 1
    assert not torch.equal(first, x)


def test_training_brings_two_views_of_an_image_together(images):
    """On views it never saw, the trained encoder puts an image's two views closer, against the other images,
    than the untrained one does: the embedding tells images apart while ignoring crop, flip and contrast."""
    def gap(model):  # mean cosine of partner views minus that of all other pairs
        with torch.no_grad():
            generator = torch.Generator().manual_seed(99)
            a, b = model(simclr.augment(images, generator)), model(simclr.augment(images, generator))
        similarity = a @ b.T
        partners = similarity.diagonal().mean()
        return (partners - (similarity.sum() - similarity.diagonal().sum()) / (len(a) ** 2 - len(a))).item()

    torch.manual_seed(0)
    untrained = simclr.SimCLREncoder().eval()
    trained = simclr.train_simclr(images, steps=40, batch_size=128)
    assert gap(trained) > gap(untrained) + 0.1  # measured: 0.16 against 0.02


def test_the_cache_key_changes_with_images_seed_and_recipe(images):
    key = simclr.cache_key(images, 0)
    assert key == simclr.cache_key(images.clone(), 0)
    assert key != simclr.cache_key(images, 1)
    assert key != simclr.cache_key(images, 0, simclr.RECIPE + "-longer")
    changed = images.clone()
    changed[0, 0, 0, 0] += 0.5
    assert key != simclr.cache_key(changed, 0)


def test_trained_once_per_machine_then_read_from_the_cache(images, monkeypatch):
    monkeypatch.setattr(simclr, "STEPS", 2)
    monkeypatch.setattr(simclr, "RECIPE", "test-2-steps")
    model, identity = simclr.trained_encoder(images[:64], seed=0)
    name = f"simclr-{simclr.cache_key(images[:64], 0, 'test-2-steps')}.safetensors"
    assert RunDir(machine_cache()).exists(name)

    def never(*args, **kwargs):
        raise AssertionError("trained again despite the cache")

    monkeypatch.setattr(simclr, "train_simclr", never)
    again, same = simclr.trained_encoder(images[:64], seed=0)
    assert same == identity
    assert torch.equal(again(images[:8]), model(images[:8]))
    features = again(images[:8])
    assert torch.allclose(features.norm(dim=1), torch.ones(8), atol=1e-5)


def _simclr_config(fit_images: int = 64):
    cfg = tiny_config()
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, features="simclr",
                                                             simclr_fit_images=fit_images))


@pytest.mark.slow
def test_prepare_stores_the_encoders_features_and_merge_refuses_two_encoders(tmp_path, monkeypatch):
    monkeypatch.setattr(simclr, "STEPS", 2)
    monkeypatch.setattr(simclr, "RECIPE", "test-2-steps")
    config = _simclr_config()
    run = RunDir(str(tmp_path / "run"))
    prepare(run, config, shard_range=(0, 1))  # as two machines would
    prepare(run, config, shard_range=(1, None))
    manifest = merge(run)
    first = fashion_mnist.load(FASHION_MNIST, "train", 64)[0]
    model, identity = simclr.trained_encoder(first, 0)
    assert manifest["feature_encoder"] == identity and manifest["feature_dim"] == 64
    stored = torch.cat([c["features"] for _, c in read_columns(run, ["features"])]).float()
    expected = model(fashion_mnist.load(FASHION_MNIST, "train", 300)[0])
    assert torch.allclose(stored, expected, atol=2e-3)  # fp16 storage

    part = next(p for p in run.list("data/parts") if p.startswith("000001"))
    data = json.loads(run.read_text(f"data/parts/{part}"))
    run.write_text(f"data/parts/{part}", json.dumps({**data, "feature_encoder": "another"}))
    with pytest.raises(ParisError, match="differently trained feature encoders"):
        merge(run)


def test_every_image_is_seen_at_the_encoders_size():
    big = F.interpolate(torch.rand(2, 3, 8, 8) * 2 - 1, size=64, mode="nearest")
    assert simclr.resize(big).shape == (2, 3, simclr.SIZE, simclr.SIZE)
    same = torch.rand(2, 1, simclr.SIZE, simclr.SIZE)
    assert simclr.resize(same) is same
