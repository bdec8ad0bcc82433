"""A tiny synthetic Paris release, laid out and named as the public one: what the conversion tests read.

The networks below are written independently of paris.models, after the paper's description and the tensor
names of a third-party port of the release (nn.MultiheadAttention with fused in_proj, `layers`, `patch_embed`,
`time_embed`, a stored `pos_embed`), and they take the timestep on the release's 0..1000 scale. A conversion
is right when paris's models, given the converted weights, compute what these compute.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from testkit.tiny_encoders import save_tiny_clip, save_tiny_vae

TEXT_DIM = 32  # the tiny CLIP's width
LATENT = (4, 8, 8)  # the tiny VAE's latents of 64x64 images


def dit_sincos(dim: int, grid: int) -> torch.Tensor:
    """DiT's table written as its numpy original reads: meshgrid(w, h), the first half of the channels from
    grid[0] (the column), the second from grid[1] (the row)."""
    grid_w, grid_h = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                                    indexing="xy")

    def one_axis(d: int, pos: torch.Tensor) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2.0))
        out = pos.reshape(-1)[:, None] * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    return torch.cat([one_axis(dim // 2, grid_w), one_axis(dim // 2, grid_h)], dim=1).float()


class TimeEmbed(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(256, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, timestep: torch.Tensor) -> torch.Tensor:  # 0..1000
        freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float32) / 128)
        angles = timestep.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1))


def mlp(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))


def norm(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


class ExpertLayer(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = mlp(dim)

    def forward(self, x, t6, text):
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.scale_shift_table[None] + t6).chunk(6, dim=1)
        h = norm(x) * (1 + scale1) + shift1
        x = x + gate1 * self.attn(h, h, h, need_weights=False)[0]
        x = x + self.cross_attn(x, text, text, need_weights=False)[0]
        return x + gate2 * self.mlp(norm(x) * (1 + scale2) + shift2)


class ReleaseExpert(nn.Module):
    def __init__(self, dim: int = 32, depth: int = 2, heads: int = 4, patch: int = 2, pos_embed: torch.Tensor | None = None):
        super().__init__()
        channels, size, _ = LATENT
        self.patch, self.dim = patch, dim
        self.patch_embed = nn.Conv2d(channels, dim, patch, stride=patch)
        table = dit_sincos(dim, size // patch)[None] if pos_embed is None else pos_embed
        self.pos_embed = nn.Parameter(table, requires_grad=False)
        self.time_embed = TimeEmbed(dim)
        self.text_proj = nn.Linear(TEXT_DIM, dim)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.layers = nn.ModuleList(ExpertLayer(dim, heads) for _ in range(depth))
        self.final_layer = nn.Module()
        self.final_layer.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)
        self.final_layer.linear = nn.Linear(dim, patch * patch * channels)

    def forward(self, x, timestep, text):
        b, c, h, w = x.shape
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        t_emb = self.time_embed(timestep)
        t6 = self.t_block(t_emb).view(b, 6, -1)
        text = self.text_proj(text)
        for layer in self.layers:
            tokens = layer(tokens, t6, text)
        shift, scale = (self.final_layer.scale_shift_table[None] + t_emb[:, None]).chunk(2, dim=1)
        out = self.final_layer.linear(norm(tokens) * (1 + scale) + shift)
        p = self.patch
        out = out.view(b, h // p, w // p, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return out.reshape(b, c, h, w)


class RouterLayer(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = mlp(dim)

    def forward(self, x, t_emb):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(t_emb)[:, None].chunk(6, dim=2)
        h = norm(x) * (1 + scale1) + shift1
        x = x + gate1 * self.attn(h, h, h, need_weights=False)[0]
        return x + gate2 * self.mlp(norm(x) * (1 + scale2) + shift2)


class ReleaseRouter(nn.Module):
    def __init__(self, clusters: int, dim: int = 32, depth: int = 2, heads: int = 4, patch: int = 2):
        super().__init__()
        channels, size, _ = LATENT
        self.patch_embed = nn.Conv2d(channels, dim, patch, stride=patch)
        self.pos_embed = nn.Parameter(dit_sincos(dim, size // patch)[None], requires_grad=False)
        self.time_embed = TimeEmbed(dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.layers = nn.ModuleList(RouterLayer(dim, heads) for _ in range(depth))
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim), nn.GELU(), nn.Linear(dim, clusters))

    def forward(self, x, timestep):
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1)
        t_emb = self.time_embed(timestep)
        for layer in self.layers:
            tokens = layer(tokens, t_emb)
        return self.head(tokens[:, 0])


def expert_config(dim: int = 32, depth: int = 2, heads: int = 4, patch: int = 2) -> dict:
    return {"model_type": "dit_expert", "hidden_size": dim, "num_layers": depth, "num_heads": heads,
            "patch_size": patch, "in_channels": LATENT[0], "out_channels": LATENT[0], "mlp_ratio": 4.0,
            "text_embed_dim": TEXT_DIM, "use_adaln_single": True, "cfg_dropout_prob": 0.1}


def write_release(root: Path, num_experts: int = 2, seed: int = 0,
                  own_table: bool = False) -> tuple[list[ReleaseExpert], ReleaseRouter]:
    """The release layout under `root`, with random weights (every tensor matters); returns the networks it
    saved. With `own_table`, expert 0 stores a position table that is not DiT's."""
    torch.manual_seed(seed)
    table = torch.randn(1, (LATENT[1] // 2) ** 2, 32) if own_table else None
    experts = [_randomized(ReleaseExpert(pos_embed=table if k == 0 else None)) for k in range(num_experts)]
    router = _randomized(ReleaseRouter(num_experts))
    for k, expert in enumerate(experts):
        _save(root / f"expert_{k}", expert, "diffusion_pytorch_model.safetensors", expert_config())
    _save(root / "router", router, "pytorch_model.safetensors",
          {"model_type": "dit_router", "num_clusters": num_experts, "hidden_size": 32, "num_layers": 2,
           "num_heads": 4, "patch_size": 2})
    (root / "config.json").write_text(json.dumps(
        {"num_experts": num_experts, "image_size": LATENT[1], "num_channels": LATENT[0], "use_latents": True,
         "vae_name": "stabilityai/sd-vae-ft-mse", "text_encoder_name": "openai/clip-vit-large-patch14"}))
    (root / "model_index.json").write_text(json.dumps(
        {"_class_name": "DDMPipeline", "num_experts": num_experts, "vae": ["diffusers", "AutoencoderKL"],
         "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"]}))
    save_tiny_vae(root / "vae")
    save_tiny_clip(root / "text_encoder")
    (root / "tokenizer").mkdir()
    for file in (root / "text_encoder").iterdir():  # the release keeps the tokenizer in its own folder
        if file.name != "config.json" and file.suffix != ".safetensors":
            file.rename(root / "tokenizer" / file.name)
    return experts, router


def _randomized(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name != "pos_embed":
                param.normal_(0, 0.2)
    return model.eval()


def _save(folder: Path, model: nn.Module, weights: str, config: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / weights))
    (folder / "config.json").write_text(json.dumps(config))
