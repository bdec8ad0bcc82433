"""Training throughput of one expert: samples/s and achieved FLOP/s of a full step (forward, backward, AdamW).

FLOPs are counted with torch.utils.flop_counter on one step; the baseline measured in the same run is the
dense matmul throughput of the same device and dtype, so the ratio (model FLOP utilisation of what this
machine can actually do) stays meaningful on noisy machines. On GPU the share of the bf16 peak is printed too.

    .venv/bin/python benchmarks/train_throughput.py                                  # tiny and B/2 on CPU
    python benchmarks/train_throughput.py --presets XL/2 --batch 32 --device cuda --compile   # on a GPU
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from paris.config import dit_config
from paris.flow import flow_matching_loss
from paris.models.dit import DiT
from paris.randomness import BatchRandom

BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "A40": 150e12}  # dense, from the vendors' sheets


def matmul_flops_per_s(device: str, dtype: torch.dtype, n: int) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    start, reps = time.perf_counter(), 0
    while time.perf_counter() - start < 2.0:
        a @ b
        reps += 1
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def measure(preset: str, batch: int, steps: int, device: str, bf16: bool, compile: bool) -> dict:
    config = dit_config(preset, text_dim=384) if preset == "tiny" else dit_config(preset)
    model = DiT(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    forward = torch.compile(model) if compile else model
    x0 = torch.randn(batch, config.in_channels, config.input_size, config.input_size, device=device)
    text = torch.randn(batch, 77 if preset != "tiny" else 16, config.text_dim, device=device)
    generator = torch.Generator().manual_seed(0)

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = flow_matching_loss(forward, x0, "logit-normal", BatchRandom(batch, generator), text=text)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    for _ in range(2):  # warm-up (and compilation)
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = (time.perf_counter() - start) / steps
    return {"preset": preset, "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "batch": batch,
            "samples_per_s": batch / seconds, "flops_per_step": flops, "flops_per_s": flops / seconds}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="tiny,B/2")
    parser.add_argument("--batch", type=int, default=0, help="0: 64 for tiny, 8 for others on CPU")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    bf16 = args.device == "cuda"
    if bf16:
        torch.backends.cuda.matmul.allow_tf32 = True
    dtype = torch.bfloat16 if bf16 else torch.float32
    baseline = matmul_flops_per_s(args.device, dtype, 8192 if bf16 else 2048)
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; dense {dtype} matmul baseline {baseline / 1e12:.3f} TFLOP/s")
    peak = next((v for k, v in BF16_PEAK.items() if k in name), None) if bf16 else None
    print(f"{'preset':>6} {'params':>8} {'batch':>5} {'samples/s':>10} {'GFLOP/step':>11} {'TFLOP/s':>8} "
          f"{'of matmul':>9}" + (f" {'of bf16 peak':>12}" if peak else ""))
    for preset in args.presets.split(","):
        batch = args.batch or (64 if preset == "tiny" or args.device == "cuda" else 8)
        r = measure(preset, batch, args.steps, args.device, bf16, args.compile)
        print(f"{preset:>6} {r['params_m']:7.1f}M {batch:5d} {r['samples_per_s']:10.1f} {r['flops_per_step'] / 1e9:11.1f} "
              f"{r['flops_per_s'] / 1e12:8.3f} {r['flops_per_s'] / baseline:9.1%}"
              + (f" {r['flops_per_s'] / peak:12.1%}" if peak else ""))


if __name__ == "__main__":
    main()
