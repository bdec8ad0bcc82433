"""`prepare` with the real encoder classes (tiny, random): the store holds what they compute, text stored as
token ids or as embeddings gives the same states, and token ids too many for a table are encoded per batch."""

from __future__ import annotations

import pytest
import torch

from testkit.tiny_encoders import IMAGE_SIZE, laion_config, with_data, write_folder
from paris.data.prepare import prepare
from paris.data.shard_reader import read_columns
from paris.data.store import load_store
from testkit.runs import read_all
from paris.models.encoders import Dinov2Features, build_autoencoder, build_text_encoder
from paris.run import RunDir


@pytest.mark.slow
def test_prepare_with_the_real_encoders_stores_what_they_compute(tmp_path, models):
    folder = write_folder(tmp_path / "images", 6)
    run = RunDir(str(tmp_path / "run"))
    manifest = prepare(run, laion_config(models, "folder", str(folder)))
    assert manifest["latent_shape"] == [4, 8, 8] and manifest["text_dim"] == 32 and manifest["feature_dim"] == 32
    assert manifest["encoders"]["autoencoder"] == "sd-vae" and manifest["max_tokens"] == 77
    store = load_store(run)
    from paris.data.preprocess import load_image

    image = load_image((folder / "0003.jpg").read_bytes(), IMAGE_SIZE, 32)[None]
    vae = build_autoencoder("sd-vae", models["vae"])
    assert torch.allclose(read_all(store).latents[3], vae.encode(image)[0], atol=2e-3)  # fp16 storage
    features = torch.cat([c["features"] for _, c in read_columns(run, ["features"])])
    assert torch.allclose(features[3].float(), Dinov2Features(models["dinov2"], "cls")(image)[0], atol=5e-3)
    states, mask = store.text(store.batch(torch.tensor([3])))
    expected, _ = build_text_encoder("clip", models["clip"], 77).encode([read_all(store).captions[3]])
    assert torch.allclose(states, expected, atol=1e-5) and mask.all()


@pytest.mark.slow
def test_text_storage_embeddings_matches_tokens(tmp_path, models):
    folder = write_folder(tmp_path / "images", 5)
    tokens, embeddings = RunDir(str(tmp_path / "a")), RunDir(str(tmp_path / "b"))
    cfg = laion_config(models, "folder", str(folder))
    prepare(tokens, cfg)
    prepare(embeddings, with_data(cfg, text_storage="embeddings"))
    a, b = load_store(tokens), load_store(embeddings)
    rows, drop = torch.tensor([0, 4, 2]), torch.tensor([False, False, True])
    assert "text_ids" in a.batch(rows).text and "text_states" in b.batch(rows).text
    (sa, ma), (sb, mb) = a.text(a.batch(rows), drop), b.text(b.batch(rows), drop)
    assert torch.allclose(sa, sb, atol=3e-3) and torch.equal(ma, mb)  # embeddings are fp16
    assert not torch.allclose(sa[0], sa[2], atol=1e-2)  # the dropped one is the empty prompt


def test_token_ids_are_encoded_per_batch_when_captions_are_too_many_for_a_table(tmp_path, models, monkeypatch):
    from paris.data import text_lookup

    folder = write_folder(tmp_path / "images", 5)
    run = RunDir(str(tmp_path / "run"))
    prepare(run, laion_config(models, "folder", str(folder)))
    rows, drop = torch.tensor([1, 3, 0]), torch.tensor([False, True, False])
    table = load_store(run)
    table = table.text(table.batch(rows), drop)
    monkeypatch.setattr(text_lookup, "TABLE_BYTES", 0)
    store = load_store(run)
    per_batch = store.text(store.batch(rows), drop)
    assert store._text.table is None  # really the per-batch path
    assert torch.allclose(table[0], per_batch[0], atol=1e-5) and torch.equal(table[1], per_batch[1])
