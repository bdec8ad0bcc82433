"""The router: a DiT with AdaLN-Zero on t and a CLS token, predicting which cluster x_t came from.

Trained with cross-entropy on (x_t, t) -> cluster of x0; at sampling time its softmax estimates
p(k | x_t, t), the weight of expert k in the decentralized flow (DDM, arXiv 2501.05450). Paris's router sees
no text; with `text_dim > 0` the mean-pooled text joins the timestep conditioning, as in DDM.
"""

from __future__ import annotations

import torch
from torch import nn

from paris.config import RouterConfig
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


class AdaLNZeroBlock(nn.Module):
    """DiT's block: each block regresses its own shift/scale/gate from the conditioning; gates start at 0."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, mlp_ratio)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x, cond):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(cond)[:, None].chunk(6, 2)
        x = x + gate_msa * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class Router(nn.Module):
    def __init__(self, config: RouterConfig):
        super().__init__()
        self.architecture = c = config  # typed; `config` is left to diffusers (paris.models.diffusers_model)
        d = c.hidden_size
        self.x_embedder = PatchEmbed(c.input_size, c.patch_size, c.in_channels, d, stored=c.pos_embed == "stored")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.t_embedder = TimestepEmbedder(d, c.timestep_map)
        self.text_proj = nn.Linear(c.text_dim, d) if c.text_dim else None
        self.blocks = nn.ModuleList(AdaLNZeroBlock(d, c.num_heads, c.mlp_ratio) for _ in range(c.depth))
        self.head = nn.Sequential(
            nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d), nn.GELU(), nn.Linear(d, c.num_experts)
        )
        self.initialize_weights()

    def initialize_weights(self):
        init_linear_layers(self)
        init_embedders(self.x_embedder, self.t_embedder)
        nn.init.normal_(self.cls_token, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)

    def forward(self, x, t, text=None, text_mask=None):
        """Logits [B, num_experts] for x [B,C,H,W] at time t [B]; text is used only when configured."""
        tokens = self.x_embedder(x.to(self.x_embedder.proj.weight.dtype))
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1).to(tokens.dtype), tokens], dim=1)
        cond = self.t_embedder(t)
        if self.text_proj is not None:
            cond = cond + self.text_proj(_masked_mean(text, text_mask).to(cond.dtype))
        for block in self.blocks:
            tokens = run_block(self, block, tokens, cond)
        return self.head(tokens[:, 0])


def _masked_mean(text: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return text.mean(1)
    weights = mask.to(text.dtype)[..., None]
    return (text * weights).sum(1) / weights.sum(1).clamp(min=1)
