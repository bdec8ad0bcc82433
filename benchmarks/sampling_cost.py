"""What a mixture costs at sampling time: latency per routing rule, the router's share, and peak memory.

Experts and router have random weights (the cost does not depend on training); experts are saved to disk
and loaded lazily, as ParisPipeline does. Figures are ratios measured in the same run.

    .venv/bin/python benchmarks/sampling_cost.py                        # K=8 tiny experts; memory with B/2 experts
    .venv/bin/python benchmarks/sampling_cost.py --router-sizes tiny,B/2,XL/2
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time

import torch

from paris.config import dit_config, router_config
from paris.data.encoders import IdentityAutoencoder, build_text_encoder
from paris.models.dit import DiT
from paris.models.io import load_pretrained, save_pretrained
from paris.models.router import Router
from paris.run import RunDir
from paris.sample import ExpertPool, Mixture, generate

PROMPTS = ["a photo of a sneaker", "a photo of a bag", "a photo of a dress", "a picture of a coat"]


def build(preset: str, num_experts: int, folder: str, max_resident: int) -> Mixture:
    """K randomly initialised experts of `preset` saved under `folder`, a random router, the MiniLM encoder."""
    config = dit_config(preset, text_dim=384)
    run = RunDir(folder)
    for k in range(num_experts):
        if not run.exists(f"expert_{k}/config.json"):
            torch.manual_seed(k)
            save_pretrained(run, f"expert_{k}", _randomised(DiT(config)))
    torch.manual_seed(100)
    router = Router(router_config("tiny" if preset == "tiny" else "B/2", in_channels=config.in_channels,
                                  input_size=config.input_size, num_experts=num_experts))
    loaders = [lambda k=k: load_pretrained(run, f"expert_{k}") for k in range(num_experts)]
    shape = (config.in_channels, config.input_size, config.input_size)
    return Mixture(ExpertPool(loaders, max_resident), _randomised(router).eval(),
                   build_text_encoder("minilm", "", 16), IdentityAutoencoder(), shape)


def _randomised(model):
    """Zero-initialised layers get random values, so that velocities and routing are not trivially zero/uniform."""
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    return model


def latency(mixture: Mixture, strategy: str, batch: int, steps: int) -> float:
    prompts = (PROMPTS * batch)[:batch]
    generate(mixture, prompts, strategy, steps=1)  # warm-up: loads every expert
    start = time.perf_counter()
    generate(mixture, prompts, strategy, steps=steps)
    return (time.perf_counter() - start) / steps


def router_seconds(mixture: Mixture, batch: int, repeats: int = 5) -> float:
    x = torch.randn(batch, *mixture.latent_shape)
    t = torch.full((batch,), 0.5)
    with torch.no_grad():
        mixture.router(x, t)
        start = time.perf_counter()
        for _ in range(repeats):
            mixture.router(x, t)
    return (time.perf_counter() - start) / repeats


def peak_memory_child(preset: str, num_experts: int, max_resident: int, folder: str) -> None:
    """Run top-2 sampling and print this process's peak resident memory in MiB (called in a subprocess)."""
    mixture = build(preset, num_experts, folder, max_resident)
    generate(mixture, PROMPTS, "top2", steps=2)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def peak_memory(preset: str, num_experts: int, max_resident: int, folder: str) -> float:
    out = subprocess.run([sys.executable, __file__, "--memory-child", preset, str(num_experts), str(max_resident), folder],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--router-sizes", default="tiny,B/2")
    parser.add_argument("--memory-preset", default="B/2")
    parser.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        preset, k, cap, folder = args.memory_child
        return peak_memory_child(preset, int(k), int(cap), folder)

    with tempfile.TemporaryDirectory() as tmp:
        mixture = build("tiny", args.experts, f"{tmp}/tiny", 0)
        seconds = {s: latency(mixture, s, args.batch, args.steps) for s in ("top1", "top2", "full")}
        print(f"K={args.experts} tiny experts, batch {args.batch}, CPU: seconds per sampling step")
        for s, sec in seconds.items():
            print(f"  {s:5s} {sec:.4f} s  ({sec / seconds['top1']:.2f}x top1)")
        print("router share of a top-1 step (expert at that size, batch of cond + uncond):")
        for size in args.router_sizes.split(","):
            m = mixture if size == "tiny" else build(size, 1, f"{tmp}/{size.replace('/', '')}", 0)
            expert = m.experts[0]
            x = torch.randn(2 * 2, *m.latent_shape)
            with torch.no_grad():
                start = time.perf_counter()
                expert(x, torch.full((4,), 0.5), torch.randn(4, 16, 384))
                expert_s = time.perf_counter() - start
            r = router_seconds(m, 2, repeats=2)
            print(f"  {size:5s} expert {expert_s:.3f} s, router {r:.3f} s: router = {r / (r + expert_s):.1%} of a top-1 step")
        k2 = peak_memory(args.memory_preset, 2, 2, f"{tmp}/mem")
        k8 = peak_memory(args.memory_preset, args.experts, 2, f"{tmp}/mem")
        print(f"peak memory of top-2 sampling with --max-resident-experts 2, {args.memory_preset} experts: "
              f"K=2 {k2:.0f} MiB, K={args.experts} {k8:.0f} MiB ({k8 / k2 - 1:+.1%})")


if __name__ == "__main__":
    main()
