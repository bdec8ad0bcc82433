"""The real encoder classes (AutoencoderKL, CLIPTextModel + CLIPTokenizer, Dinov2Model), tiny and random,
loaded from disk through the user's path; and the clear errors for missing or wrong weights."""

from __future__ import annotations

import json

import pytest
import torch

from testkit.tiny_encoders import IMAGE_SIZE, laion_config, tiny_models, with_data, write_folder
from paris.models.encoders import Dinov2Features, build_autoencoder, build_features, build_text_encoder
from paris.data.prepare import prepare
from paris.data.store import load_store, read_columns
from paris.errors import ParisError
from paris.run import RunDir


@pytest.fixture(scope="module")
def models():
    return tiny_models()


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_sd_vae_stores_the_scaled_posterior_mean(models):
    from diffusers import AutoencoderKL

    vae = build_autoencoder("sd-vae", models["vae"], 0.18215)
    x = _images(2)
    latents = vae.encode(x)
    assert latents.shape == (2, 4, IMAGE_SIZE // 8, IMAGE_SIZE // 8)
    reference = AutoencoderKL.from_pretrained(models["vae"]).encode(x).latent_dist.mean * 0.18215
    assert torch.allclose(latents, reference, atol=1e-5)
    assert torch.equal(vae.encode(x), latents)  # the mean, not a sample: deterministic
    decoded = vae.decode(latents)
    assert decoded.shape == x.shape and decoded.min() >= -1 and decoded.max() <= 1


def test_clip_text_77_tokens_all_attended(models):
    from transformers import CLIPTextModel

    enc = build_text_encoder("clip", models["clip"], 77)
    ids, mask = enc.tokenize(["a cat", ""])
    assert ids.shape == (2, 77) and ids.dtype == torch.int32 and mask.all()
    assert ids[0, 0] == enc.tokenizer.bos_token_id and ids[1, 1] == enc.tokenizer.eos_token_id
    states = enc.encode_tokens(ids, mask)
    reference = CLIPTextModel.from_pretrained(models["clip"])(input_ids=ids.long()).last_hidden_state
    assert states.shape == (2, 77, 32) and torch.allclose(states, reference, atol=1e-5)
    assert not torch.allclose(states[0], states[1])


@pytest.mark.parametrize("pooling,dim", [("cls", 32), ("mean", 32), ("both", 64)])
def test_dinov2_pooling(models, pooling, dim):
    from transformers import Dinov2Model

    features = Dinov2Features(models["dinov2"], pooling)
    x = _images(2)
    out = features(x)
    assert out.shape == (2, dim)
    # DINOv2's preprocessing: [-1,1] -> 256 -> centre 224 crop -> ImageNet normalisation
    pixels = torch.nn.functional.interpolate((x + 1) / 2, size=256, mode="bicubic", antialias=True)[:, :, 16:240, 16:240]
    pixels = (pixels.clamp(0, 1) - Dinov2Features.MEAN.view(3, 1, 1)) / Dinov2Features.STD.view(3, 1, 1)
    tokens = Dinov2Model.from_pretrained(models["dinov2"])(pixel_values=pixels).last_hidden_state
    expected = {"cls": tokens[:, 0], "mean": tokens[:, 1:].mean(1), "both": torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], 1)}
    assert torch.allclose(out, expected[pooling], atol=1e-5)


def test_missing_weights_say_how_to_provide_them(tmp_path, models):
    with pytest.raises(ParisError, match="huggingface-cli download stabilityai/sd-vae-ft-mse.*data.autoencoder_path"):
        build_autoencoder("sd-vae", str(tmp_path / "nothing"))
    with pytest.raises(ParisError, match="openai/clip-vit-large-patch14.*data.text_encoder_path"):
        build_text_encoder("clip", "", 77)
    with pytest.raises(ParisError, match="facebook/dinov2-large.*data.features_path"):
        build_features(with_data(laion_config(models, "folder", ""), features_path="").data, None, None)


def test_weights_of_the_wrong_model_type_are_refused(models, tmp_path):
    with pytest.raises(ParisError, match=r"holds a 'clip_text_model' model, not dinov2"):
        Dinov2Features(models["clip"], "cls")
    with pytest.raises(ParisError, match=r"holds a 'dinov2' model, not sd-vae \(AutoencoderKL\)"):
        build_autoencoder("sd-vae", models["dinov2"])
    with pytest.raises(ParisError, match=r"holds a None model, not clip"):
        build_text_encoder("clip", _untyped(tmp_path), 77)


def _untyped(tmp_path) -> str:
    """A directory whose config.json names no model type."""
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 3}))
    return str(tmp_path)


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
    assert torch.allclose(store.latents[3], vae.encode(image)[0], atol=2e-3)  # fp16 storage
    features = torch.cat([c["features"] for _, c in read_columns(run, ["features"])])
    assert torch.allclose(features[3].float(), Dinov2Features(models["dinov2"], "cls")(image)[0], atol=5e-3)
    states, mask = store.text(torch.tensor([3]))
    expected, _ = build_text_encoder("clip", models["clip"], 77).encode([store.captions[3]])
    assert torch.allclose(states, expected, atol=1e-5) and mask.all()


def test_text_storage_embeddings_matches_tokens(tmp_path, models):
    folder = write_folder(tmp_path / "images", 5)
    tokens, embeddings = RunDir(str(tmp_path / "a")), RunDir(str(tmp_path / "b"))
    cfg = laion_config(models, "folder", str(folder))
    prepare(tokens, cfg)
    prepare(embeddings, with_data(cfg, text_storage="embeddings"))
    a, b = load_store(tokens), load_store(embeddings)
    assert "text_ids" in a.text_data and "text_states" in b.text_data
    rows, drop = torch.tensor([0, 4, 2]), torch.tensor([False, False, True])
    (sa, ma), (sb, mb) = a.text(rows, drop), b.text(rows, drop)
    assert torch.allclose(sa, sb, atol=3e-3) and torch.equal(ma, mb)  # embeddings are fp16
    assert not torch.allclose(sa[0], sa[2], atol=1e-2)  # the dropped one is the empty prompt


def test_token_ids_are_encoded_per_batch_when_captions_are_too_many_for_a_table(tmp_path, models, monkeypatch):
    from paris.data import text_lookup

    folder = write_folder(tmp_path / "images", 5)
    run = RunDir(str(tmp_path / "run"))
    prepare(run, laion_config(models, "folder", str(folder)))
    rows, drop = torch.tensor([1, 3, 0]), torch.tensor([False, True, False])
    table = load_store(run).text(rows, drop)
    monkeypatch.setattr(text_lookup, "TABLE_BYTES", 0)
    store = load_store(run)
    per_batch = store.text(rows, drop)
    assert store._text.table is None  # really the per-batch path
    assert torch.allclose(table[0], per_batch[0], atol=1e-5) and torch.equal(table[1], per_batch[1])
