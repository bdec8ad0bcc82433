"""Text storage trade-off for CLIP ViT-L/14 (77 tokens): token ids (encode while training) vs fp16 states.

    .venv/bin/python benchmarks/text_storage.py

Bytes are exact (per sample and for Paris's 11M images). Seconds: the real CLIP ViT-L/14 text
architecture (CLIPTextModel, 123M parameters, randomly initialised: speed does not depend on the weights)
encoding batches of 64 captions on this machine's CPU.
"""

from __future__ import annotations

import time

import torch
from transformers import CLIPTextConfig, CLIPTextModel

TOKENS, WIDTH, IMAGES, BATCH = 77, 768, 11_000_000, 64


def main() -> None:
    ids_bytes = TOKENS * 4 + TOKENS  # int32 ids + bool mask
    states_bytes = TOKENS * WIDTH * 2 + TOKENS  # fp16 states + bool mask
    print(f"bytes per sample: tokens {ids_bytes} B, embeddings {states_bytes:,} B ({states_bytes / ids_bytes:.0f}x)")
    print(f"for {IMAGES:,} images: tokens {ids_bytes * IMAGES / 1e9:.1f} GB, embeddings {states_bytes * IMAGES / 1e12:.2f} TB")
    torch.manual_seed(0)
    model = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=WIDTH, intermediate_size=3072,
                                         num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=TOKENS,
                                         projection_dim=768)).eval()
    params = sum(p.numel() for p in model.parameters())
    lookups = (model.config.vocab_size + TOKENS) * WIDTH  # token and position tables: no FLOPs
    ids = torch.randint(0, 49408, (BATCH, TOKENS))
    with torch.no_grad():
        model(input_ids=ids)  # warm-up
        tick = time.perf_counter()
        for _ in range(3):
            model(input_ids=ids)
    seconds = (time.perf_counter() - tick) / (3 * BATCH)
    print(f"CLIP ViT-L/14 text encoder ({params / 1e6:.0f}M parameters), {torch.get_num_threads()} CPU threads: "
          f"{seconds * 1e3:.1f} ms per caption, {1 / seconds:.0f} captions/s")
    print(f"  forward FLOPs per caption ~ 2 x non-embedding params x tokens = {2 * (params - lookups) * TOKENS / 1e9:.0f} GFLOPs "
          f"(a DiT-XL/2 training step costs ~3 x 119 = 356 GFLOPs per image)")


if __name__ == "__main__":
    main()
