"""Building blocks shared by the expert DiT and the router: embedders, attention, MLP."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """t in [0, 1] -> a timestep on the 0..1000 scale of the release (`timestep_map`: 1000t, or round(999t)
    for converted DDPM nets) -> 256-d sinusoid -> Linear-SiLU-Linear."""

    def __init__(self, hidden_size: int, timestep_map: str = "1000t", frequency_size: int = 256):
        super().__init__()
        self.frequency_size, self.timestep_map = frequency_size, timestep_map
        self.mlp = nn.Sequential(
            nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_size // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        steps = 1000 * t.float() if self.timestep_map == "1000t" else torch.round(999 * t.float())
        args = steps[:, None] * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(embedding.to(self.mlp[0].weight.dtype))


class PatchEmbed(nn.Module):
    """[B, C, H, W] -> [B, (H/p)*(W/p), D] tokens, plus the fixed 2-D sin-cos position embedding of DiT.

    The table is computed, not saved, unless `stored`: then it is a buffer of the weights file (a converted
    release whose table is not DiT's keeps its own)."""

    def __init__(self, input_size: int, patch_size: int, in_channels: int, hidden_size: int, stored: bool = False):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)
        grid = input_size // patch_size
        self.register_buffer("pos_embed", sincos_2d(hidden_size, grid)[None], persistent=stored)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2) + self.pos_embed.to(x.dtype)


def sincos_2d(dim: int, grid: int) -> torch.Tensor:
    """[grid*grid, dim], tokens in row-major order: the first half of the channels encodes the column, the
    second half the row, exactly as DiT's get_2d_sincos_pos_embed (from MAE) and PixArt's."""
    coords = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    return torch.cat([_sincos_1d(dim // 2, cols.flatten()), _sincos_1d(dim // 2, rows.flatten())], dim=1).float()


def _sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = pos[:, None] * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


class Attention(nn.Module):
    """Multi-head attention through scaled_dot_product_attention (flash/memory-efficient kernels on GPU).

    Self-attention when `context` is None; cross-attention from x to `context` otherwise.
    """

    def __init__(self, dim: int, num_heads: int, context_dim: int | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim or dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, context=None, context_mask=None):
        b, n, d = x.shape
        context = x if context is None else context
        q = self.q(x).view(b, n, self.num_heads, -1).transpose(1, 2)
        k, v = self.kv(context).view(b, context.shape[1], 2, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        mask = None if context_mask is None else context_mask[:, None, None, :]  # True = attend
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


def attention_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """`mask`, or None when it attends to every token (CLIP's always does): SDPA given any mask leaves its
    flash kernel for slower ones, and an all-True mask changes nothing. Reads the mask's values, so call it
    where the mask is still on the CPU, once, not in every forward on a GPU (where it would wait for it)."""
    return None if mask is None or bool(mask.all()) else mask


class Mlp(nn.Sequential):
    def __init__(self, dim: int, mlp_ratio: float):
        hidden = int(dim * mlp_ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


def run_block(model: nn.Module, block: nn.Module, *args):
    """block(*args), recomputed during backward instead of stored when the model trains with
    `gradient_checkpointing` set (the training loop sets it from the config)."""
    if getattr(model, "gradient_checkpointing", False) and model.training:
        return checkpoint(block, *args, use_reentrant=False)
    return block(*args)


def init_linear_layers(module: nn.Module) -> None:
    """DiT's initialisation: Xavier-uniform weights, zero biases, for every Linear."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def init_embedders(patch: PatchEmbed, timestep: TimestepEmbedder) -> None:
    """DiT's initialisation of the input embedders: the patch projection like a Linear, the timestep MLP small."""
    w = patch.proj.weight
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))
    nn.init.zeros_(patch.proj.bias)
    nn.init.normal_(timestep.mlp[0].weight, std=0.02)
    nn.init.normal_(timestep.mlp[2].weight, std=0.02)
