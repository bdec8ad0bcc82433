"""The expert: a DiT with AdaLN-Single and cross-attention to text (PixArt-alpha style), as Paris released it.

Input latents [B, C, H, W], t in [0, 1], text token states [B, L, text_dim] (+ mask) -> velocity [B, C, H, W].
AdaLN-Single: ONE shared `t_block` turns the timestep embedding into 6 modulation vectors; each block
adds its own learned `scale_shift_table`, which costs 6*D parameters per block instead of DiT's 6*D*D.
"""

from __future__ import annotations

import torch
from torch import nn

from paris.config import DiTConfig
from paris.models.layers import (
    Attention,
    Mlp,
    PatchEmbed,
    TimestepEmbedder,
    init_embedders,
    init_linear_layers,
    modulate,
    run_block,
)


class DiTBlock(nn.Module):
    """Self-attention and MLP modulated by (shared t-block + own table); plain cross-attention to text."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.cross_attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, x, t6, text, text_mask):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (self.scale_shift_table[None] + t6).chunk(6, 1)
        x = x + gate_msa * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + self.cross_attn(x, text, text_mask)
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, patch_size: int, out_channels: int):
        super().__init__()
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)

    def forward(self, x, t_emb):
        shift, scale = (self.scale_shift_table[None] + t_emb[:, None]).chunk(2, 1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    def __init__(self, config: DiTConfig):
        super().__init__()
        self.architecture = c = config  # typed; `config` is left to diffusers (paris.models.diffusers_model)
        d = c.hidden_size
        self.x_embedder = PatchEmbed(c.input_size, c.patch_size, c.in_channels, d, stored=c.pos_embed == "stored")
        self.t_embedder = TimestepEmbedder(d, c.timestep_map)
        # A guidance-distilled student (guidance_range) reads the guidance scale as it reads t (FLUX's guidance input).
        self.g_embedder = TimestepEmbedder(d) if c.guidance_range else None
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.text_proj = nn.Linear(c.text_dim, d)
        self.blocks = nn.ModuleList(DiTBlock(d, c.num_heads, c.mlp_ratio) for _ in range(c.depth))
        self.final_layer = FinalLayer(d, c.patch_size, c.in_channels)
        self.initialize_weights()

    def initialize_weights(self):
        init_linear_layers(self)
        init_embedders(self.x_embedder, self.t_embedder)
        nn.init.normal_(self.t_block[1].weight, std=0.02)
        if self.g_embedder is not None:  # starts without effect: a student from an unguided start begins as it
            nn.init.normal_(self.g_embedder.mlp[0].weight, std=0.02)
            nn.init.zeros_(self.g_embedder.mlp[2].weight)
        # Zero the outputs that write into the residual stream from new inputs, so training starts
        # from a network that ignores the text and predicts zero velocity (PixArt / DiT).
        for block in self.blocks:
            nn.init.zeros_(block.cross_attn.proj.weight)
        nn.init.zeros_(self.final_layer.linear.weight)

    def forward(self, x, t, text, text_mask=None, guidance=None):
        """x [B,C,H,W], t [B] in [0,1], text [B,L,text_dim], text_mask [B,L] bool (True = real token); guidance
        [B]: the scale a guidance-distilled model applies (None: 1, the conditional velocity; other models take none)."""
        b, c, h, w = x.shape
        tokens = self.x_embedder(x.to(self.x_embedder.proj.weight.dtype))  # fp32 latents into bf16/fp16 weights
        t_emb = self.t_embedder(t)
        if self.g_embedder is not None:
            t_emb = t_emb + self.g_embedder(torch.ones_like(t) if guidance is None else guidance)
        t6 = self.t_block(t_emb).view(b, 6, -1)
        text = self.text_proj(text.to(tokens.dtype))
        for block in self.blocks:
            tokens = run_block(self, block, tokens, t6, text, text_mask)
        return self.unpatchify(self.final_layer(tokens, t_emb), h, w).to(x.dtype)

    def unpatchify(self, tokens, h, w):
        p, c = self.architecture.patch_size, self.architecture.in_channels
        x = tokens.view(tokens.shape[0], h // p, w // p, p, p, c)
        return torch.einsum("bhwpqc->bchpwq", x).reshape(tokens.shape[0], c, h, w)
