"""The real encoder classes (AutoencoderKL, CLIPTextModel + CLIPTokenizer, Dinov2Model), tiny and random,
loaded from disk through the user's path; and the clear errors for missing or wrong weights."""

from __future__ import annotations

import json

import pytest
import torch

from testkit.tiny_encoders import IMAGE_SIZE, laion_config, with_data
from paris.models.encoders import Dinov2Features, build_autoencoder, build_features, build_text_encoder
from paris.errors import ParisError


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
    with pytest.raises(ParisError, match="hf download stabilityai/sd-vae-ft-mse.*data.autoencoder_path"):
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
