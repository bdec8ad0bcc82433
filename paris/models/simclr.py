"""Image features learned without labels (SimCLR, Chen et al. 2020), the stand-in for DINOv2 where its weights
cannot be had: Paris clusters on self-supervised image features, and pixel distances (pixel-PCA) cut across the
semantic groups that clusters should be.

A small CNN learns to give two random views of an image (crop, flip, contrast, cut-out) nearby embeddings and
other images' views distant ones (the NT-Xent loss). It is trained once on the first images of a data set and then
frozen; shards use it as they use any feature extractor. Training takes 2 to 7 minutes on 2 CPU cores, so the weights
are kept in the machine's cache under a key of the training images and the recipe.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from paris import progress
from paris.cache import machine_cache
from paris.randomness import EpochBatches, step_generator
from paris.run import RunDir

RECIPE = "simclr-16px-cnn3-head64-crop.6-cutout-t.5-b256-s1500-lr2e-3"  # in the cache key: change it with the recipe
STEPS = 1500
# A softer temperature than SimCLR's ImageNet 0.1-0.2 lets similar images share a neighbourhood instead of pushing
# every image from every other one: the clusters follow the classes better (K=8 NMI 0.60 at 0.5, 0.47 at 0.2;
# benchmarks/learned_features.py).
TEMPERATURE = 0.5
# The encoder sees every image at 16x16: clusters need silhouettes and tones, not fine detail, and at a quarter of
# the pixels it trains 5x the steps in the same minutes (an earlier 4-layer encoder at 32x32 reached NMI 0.40 at
# K=8 in the 140 s that 1,500 steps take here; benchmarks/learned_features.py measures this one).
SIZE = 16


def _block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class SimCLREncoder(nn.Module):
    """[N,C,H,W] in [-1,1], seen at 16x16 -> [N,64] unit vectors: the projection head's output, which the loss
    sees and which is clustered. (SimCLR's linear probes prefer the layer before the head; k-means here does
    not: NMI 0.60 against 0.53 at K=8.)"""

    def __init__(self, channels: int = 1, width: int = 128, dim: int = 64):
        super().__init__()
        self.backbone = nn.Sequential(*_block(channels, 32, 1), *_block(32, 64, 2), *_block(64, width, 2),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(resize(images))), dim=1)


def resize(images: torch.Tensor) -> torch.Tensor:
    """Images at the encoder's size (antialiased when shrinking)."""
    if images.shape[-1] == SIZE and images.shape[-2] == SIZE:
        return images
    return F.interpolate(images, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random view of each image: a crop of 60-100% of the side moved anywhere inside the frame, a
    horizontal flip, a contrast and brightness change, and a cut-out square of background (Fashion-MNIST's
    background is -1, the image's minimum in general)."""
    n = len(images)
    scale = torch.empty(n).uniform_(0.6, 1.0, generator=generator)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (1 - scale)[:, None]
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = scale * flip, scale, shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    background = images.amin(dim=(1, 2, 3), keepdim=True)
    views = F.grid_sample(images - background, grid, align_corners=False) + background  # empty border: background
    contrast = torch.empty(n, 1, 1, 1).uniform_(0.6, 1.4, generator=generator)
    brightness = torch.empty(n, 1, 1, 1).uniform_(-0.2, 0.2, generator=generator)
    views = ((views - background) * contrast + background + brightness).clamp(-1, 1)
    return _cut_out(views, background, generator)


def _cut_out(views: torch.Tensor, background: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Half the views lose a random square of a third of the side: no single patch can tell two images apart."""
    n, size = len(views), views.shape[-1]
    side = size // 3
    corner = torch.randint(0, size - side + 1, (n, 2), generator=generator)
    rows, cols = torch.arange(size), torch.arange(size)
    inside_rows = (rows[None] >= corner[:, :1]) & (rows[None] < corner[:, :1] + side)
    inside_cols = (cols[None] >= corner[:, 1:]) & (cols[None] < corner[:, 1:] + side)
    square = inside_rows[:, :, None] & inside_cols[:, None, :]
    square &= (torch.rand(n, generator=generator) < 0.5)[:, None, None]
    return torch.where(square[:, None], background, views)


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: each view must pick its partner among the other 2N-1 views of the batch."""
    z = torch.cat([a, b])
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))  # a view is not its own partner
    n = len(a)
    partners = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(logits, partners)


def train_simclr(images: torch.Tensor, steps: int = STEPS, batch_size: int = 256, lr: float = 2e-3,
                 temperature: float = TEMPERATURE, seed: int = 0, on_step=None) -> SimCLREncoder:
    """The encoder trained on `images` ([N,C,H,W] in [-1,1]); `on_step(step, loss)` follows the progress.
    Every draw is a function of (seed, step), as in the experts' training."""
    torch.manual_seed(seed)
    images = resize(images)  # once, not at every step
    model = SimCLREncoder(images.shape[1]).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    batches = EpochBatches(len(images), min(batch_size, len(images)), seed)
    for step in range(steps):
        generator = step_generator(seed, step)
        batch = images[batches(step)]
        loss = nt_xent(model(augment(batch, generator)), model(augment(batch, generator)), temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for group in optimizer.param_groups:  # cosine decay to 0: the last steps settle the features
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        optimizer.step()
        if on_step is not None:
            on_step(step, loss.item())
    return model.eval()


def cache_key(images: torch.Tensor, seed: int, recipe: str = RECIPE) -> str:
    """What the trained weights are a function of: the training images' bytes, the seed and the recipe."""
    digest = hashlib.sha256(images.contiguous().numpy().tobytes())
    digest.update(f"|{tuple(images.shape)}|{seed}|{recipe}".encode())
    return digest.hexdigest()[:16]


def trained_encoder(images: torch.Tensor, seed: int) -> tuple[SimCLREncoder, str]:
    """(the encoder trained on `images` at the encoder's size, its identity: a hash of its weights), trained once
    per machine and then read from its cache ($PARIS_CACHE, else ~/.cache/paris)."""
    cache, name = RunDir(machine_cache()), f"simclr-{cache_key(images, seed, RECIPE)}.safetensors"
    model = SimCLREncoder(images.shape[1])
    if cache.exists(name):
        model.load_state_dict(cache.load_tensors(name))
    else:
        with progress.bar("learning image features (SimCLR, once per machine)", STEPS) as bar:
            model = train_simclr(images, STEPS, seed=seed,
                                 on_step=lambda step, loss: bar.update(advance=1, loss=f"{loss:.3f}"))
        cache.save_tensors(name, model.state_dict())  # written whole, even with two preparers writing it at once
    return model.eval(), weights_hash(model)


def weights_hash(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode() + tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
