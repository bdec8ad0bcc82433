"""Data: reading Fashion-MNIST (and refusing broken files), captions, and `prepare`'s store."""

from __future__ import annotations

import gzip
import shutil
import struct

import numpy as np
import pytest
import torch

from testkit.runs import FASHION_MNIST, NUM_IMAGES, SHARD_SIZE, read_all
from paris.data import fashion_mnist
from paris.data.shard_reader import read_columns
from paris.data.store import load_store
from paris.errors import ParisError
from paris.run import RunDir

PACKAGE = "dataset-fashion-mnist"  # every data error must say how to get the data
IMAGES, LABELS = fashion_mnist.FILES["train"]


def _raw_idx(name: str, header: int) -> np.ndarray:
    with gzip.open(f"{FASHION_MNIST}/{name}", "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header)


# --- fashion_mnist.load -------------------------------------------------------------------------

def test_load_real_data_shape_range_padding_labels():
    images, labels = fashion_mnist.load(FASHION_MNIST, "train", limit=50)
    assert images.shape == (50, 1, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (50,) and labels.dtype == torch.int64
    assert images.min() >= -1 and images.max() <= 1
    assert images.max() == 1 and images.min() == -1  # full range is used
    # 28x28 centred in 32x32, the 2-pixel border is black (-1)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (images[:, 0][:, border] == -1).all()
    raw_labels = _raw_idx(LABELS, 8)[:50]
    assert labels.tolist() == raw_labels.tolist()
    raw_pixels = torch.from_numpy(_raw_idx(IMAGES, 16)[: 50 * 784].reshape(50, 28, 28).copy()).float()
    assert torch.allclose(images[:, 0, 2:30, 2:30], raw_pixels / 127.5 - 1)


def test_load_test_split_and_unknown_split():
    images, labels = fashion_mnist.load(FASHION_MNIST, "test", limit=5)
    assert images.shape == (5, 1, 32, 32)
    assert labels.tolist() == _raw_idx("t10k-labels-idx1-ubyte.gz", 8)[:5].tolist()
    with pytest.raises(ParisError, match="'valid'"):
        fashion_mnist.load(FASHION_MNIST, "valid")


def test_missing_directory_names_package(tmp_path):
    with pytest.raises(ParisError, match=PACKAGE):
        fashion_mnist.load(tmp_path / "nonexistent")


def _write_idx(folder, images: bytes, labels: bytes):
    folder.mkdir(exist_ok=True)
    with gzip.open(folder / IMAGES, "wb") as f:
        f.write(images)
    with gzip.open(folder / LABELS, "wb") as f:
        f.write(labels)


def test_truncated_image_body_names_package(tmp_path):
    header = struct.pack(">IIII", 2051, 10, 28, 28)
    _write_idx(tmp_path, header + bytes(100), struct.pack(">II", 2049, 10) + bytes(10))
    with pytest.raises(ParisError, match=f"truncated.*{PACKAGE}"):
        fashion_mnist.load(tmp_path)


def test_truncated_gzip_stream_names_package(tmp_path):
    shutil.copy(f"{FASHION_MNIST}/{LABELS}", tmp_path / LABELS)
    data = open(f"{FASHION_MNIST}/{IMAGES}", "rb").read()
    (tmp_path / IMAGES).write_bytes(data[: len(data) // 2])  # a download cut in the middle
    with pytest.raises(ParisError, match=PACKAGE):
        fashion_mnist.load(tmp_path)


def test_file_cut_inside_header_is_a_paris_error(tmp_path):
    """A file that ends inside its idx header (here after 12 bytes) is truncated too."""
    _write_idx(tmp_path, struct.pack(">III", 2051, 10, 28), struct.pack(">II", 2049, 10) + bytes(10))
    with pytest.raises(ParisError, match=PACKAGE):
        fashion_mnist.load(tmp_path)


def test_wrong_magic_is_refused(tmp_path):
    # images and labels swapped
    _write_idx(tmp_path, struct.pack(">II", 2049, 10) + bytes(10), struct.pack(">IIII", 2051, 10, 28, 28) + bytes(7840))
    with pytest.raises(ParisError, match="magic"):
        fashion_mnist.load(tmp_path)


def test_image_label_count_mismatch_is_refused(tmp_path):
    _write_idx(tmp_path, struct.pack(">IIII", 2051, 2, 28, 28) + bytes(2 * 784), struct.pack(">II", 2049, 3) + bytes(3))
    with pytest.raises(ParisError, match="2 images but .* 3 labels"):
        fashion_mnist.load(tmp_path)


# --- captions -----------------------------------------------------------------------------------

def test_captions_cycle_through_templates():
    n = len(fashion_mnist.TEMPLATES)
    captions = [fashion_mnist.caption(7, i) for i in range(2 * n)]
    assert len(set(captions[:n])) == n  # every template once per cycle
    assert captions[:n] == captions[n:]  # then again in the same order
    assert all("sneaker" in c for c in captions)
    assert fashion_mnist.caption(0, 0) == fashion_mnist.class_prompt(0) == "a photo of a T-shirt"


# --- prepare and the store ----------------------------------------------------------------------

def test_prepare_manifest(prepared, config):
    manifest = prepared["manifest"]
    assert manifest["count"] == NUM_IMAGES and manifest["skipped"] == {}
    assert [s["count"] for s in manifest["shards"]] == [128, 128, NUM_IMAGES - 2 * SHARD_SIZE]
    assert manifest["latent_shape"] == [1, 32, 32] and manifest["feature_dim"] == 64
    assert manifest["text_dim"] == 384 and manifest["max_tokens"] == config.data.max_tokens
    assert manifest["text_storage"] == "tokens" and manifest["class_names"] == fashion_mnist.CLASSES
    run = RunDir(str(prepared["path"]))
    assert run.read_json("data/manifest.json") == manifest
    assert run.read_config() == config


def test_prepare_writes_manifest_last(prepared):
    writes = prepared["writes"]
    assert writes[-1] == "data/manifest.json"
    assert writes.count("data/manifest.json") == 1
    assert {"config.yaml", "data/shards/000002.safetensors", "data/parts/000000-000003.json"} <= set(writes)


def test_store_matches_the_source(prepared):
    run = RunDir(str(prepared["path"]))
    store = read_all(load_store(run))
    images, labels = fashion_mnist.load(FASHION_MNIST, "train", NUM_IMAGES)
    assert len(store) == NUM_IMAGES and torch.equal(store.rows, torch.arange(NUM_IMAGES))
    assert torch.equal(store.labels, labels)
    assert torch.allclose(store.latents, images, atol=1e-3)  # identity autoencoder, stored as fp16
    assert torch.cat([c["features"] for _, c in read_columns(run, ["features"])]).shape == (NUM_IMAGES, 64)
    assert store.captions == [fashion_mnist.caption(int(label), i) for i, label in enumerate(labels)]
    assert store.text["text_ids"].shape == (NUM_IMAGES, 16)


def test_text_states_match_the_encoder(prepared, text_encoder):
    store = load_store(RunDir(str(prepared["path"])))
    row = 7
    states, mask = text_encoder.encode([read_all(store).captions[row]])
    text, text_mask = store.text(store.batch(torch.tensor([row, row])), drop=torch.tensor([False, True]))
    assert torch.allclose(text[0], states[0], atol=1e-4)
    assert torch.equal(text_mask[0], mask[0]) and text_mask[0].sum() > 2
    empty, empty_mask = text_encoder.encode([""])
    assert torch.allclose(text[1], empty[0], atol=1e-4)
    assert text_mask[1].sum() == 2  # "" is just [CLS] [SEP]


def test_same_caption_gives_identical_text_states(prepared, text_encoder):
    store = load_store(RunDir(str(prepared["path"])))
    captions = read_all(store).captions
    a, b = next((i, j) for i in range(len(captions)) for j in range(i + 1, len(captions)) if captions[i] == captions[j])
    text, mask = store.text(store.batch(torch.tensor([a, b])))
    assert torch.equal(text[0], text[1]) and torch.equal(mask[0], mask[1])
    # The encoder itself: a caption's states do not depend on what else is in the batch.
    caption = "a photo of a bag"
    alone, _ = text_encoder.encode([caption])
    batched, _ = text_encoder.encode(["", caption, "a black and white photo of a ankle boot"])
    assert torch.allclose(alone[0], batched[1], atol=1e-5)
    assert not torch.allclose(batched[0], batched[1], atol=1e-2)
