"""What a mixture costs at sampling time: latency per routing rule, a residency cap with and without --offload,
the router's share, and peak memory.

Experts and router have random weights (the cost does not depend on training); experts are saved to disk
and loaded lazily, as ParisPipeline does. Figures are ratios measured in the same run.

    .venv/bin/python benchmarks/sampling_cost.py                        # K=8 tiny experts; memory with B/2 experts
    .venv/bin/python benchmarks/sampling_cost.py --router-sizes tiny,B/2,XL/2 --route-every 4
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

import torch

from paris.config import dit_config, router_config
from paris.models.encoders import IdentityAutoencoder, build_text_encoder
from paris.models.dit import DiT
from paris.models.io import load_pretrained, save_pretrained
from paris.models.router import Router
from paris.run import RunDir
from paris.sample import ExpertPool, Mixture, generate, peak_memory_mib

PROMPTS = ["a photo of a sneaker", "a photo of a bag", "a photo of a dress", "a picture of a coat"]


def build(preset: str, num_experts: int, folder: str, max_resident: int | None, offload: bool = False,
          device: str = "cpu") -> Mixture:
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
    return Mixture(ExpertPool(loaders, max_resident, device, offload), _randomised(router).eval().to(device),
                   build_text_encoder("minilm", "", 16), IdentityAutoencoder(), shape)


def _randomised(model):
    """Zero-initialised layers get random values, so that velocities and routing are not trivially zero/uniform."""
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    return model


def latency(mixture: Mixture, strategy: str, batch: int, steps: int, route_every: int = 1) -> float:
    prompts = (PROMPTS * batch)[:batch]
    generate(mixture, prompts, strategy, steps=1)  # warm-up: loads every expert
    start = time.perf_counter()
    generate(mixture, prompts, strategy, steps=steps, route_every=route_every)
    return (time.perf_counter() - start) / steps


def seconds(fn, repeats: int) -> float:
    """Mean wall time of fn() after one warm-up call."""
    with torch.no_grad():
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
    return (time.perf_counter() - start) / repeats


def router_and_expert_seconds(mixture: Mixture, batch: int, repeats: int) -> tuple[float, float]:
    """One router pass and one guided expert pass (cond + uncond batched, as in a top-1 step) on `batch` samples."""
    x, t = torch.randn(batch, *mixture.latent_shape), torch.full((batch,), 0.5)
    text = torch.randn(2 * batch, 16, 384)
    expert = mixture.experts[0]
    return (seconds(lambda: mixture.router(x, t), repeats),
            seconds(lambda: expert(torch.cat([x, x]), torch.cat([t, t]), text), repeats))


def load_seconds(preset: str, folder: str, repeats: int) -> dict[str, float]:
    """Seconds to load one saved expert, best of `repeats`: reading the file's bytes; paris's load_pretrained
    (built on the meta device, the memory-mapped file's tensors assigned: pages are read on first use); and the
    way it used to load, built with random weights and the file's copied in (the baseline of the ratio,
    measured here in the same run)."""
    run = RunDir(folder)
    if not run.exists("expert_0/config.json"):
        save_pretrained(run, "expert_0", DiT(dit_config(preset, text_dim=384)))
    weights = "expert_0/diffusion_pytorch_model.safetensors"

    def copied_in():
        model = DiT(dit_config(preset, text_dim=384))
        model.load_state_dict(run.load_tensors(weights))

    ways = {"read": lambda: run.read_bytes(weights), "paris": lambda: load_pretrained(run, "expert_0"),
            "random then copy": copied_in}
    best = {}
    for _ in range(repeats):  # interleaved, so that a noisy moment does not favour one way
        for name, load in ways.items():
            start = time.perf_counter()
            load()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
    return best


def peak_memory_child(preset: str, num_experts: int, max_resident: int, folder: str) -> None:
    """Run top-2 sampling and print this process's peak resident memory in MiB (called in a subprocess)."""
    mixture = build(preset, num_experts, folder, max_resident)
    generate(mixture, PROMPTS, "top2", steps=2)
    print(peak_memory_mib(torch.device("cpu")))


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
    parser.add_argument("--router-batch", type=int, default=2, help="samples per pass in the router-share figure")
    parser.add_argument("--route-every", type=int, default=4, help="also measure the router share with this interval")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-preset", default="B/2", help="experts of the memory and load-time figures")
    parser.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        preset, k, cap, folder = args.memory_child
        return peak_memory_child(preset, int(k), int(cap), folder)

    with tempfile.TemporaryDirectory() as tmp:
        mixture = build("tiny", args.experts, f"{tmp}/tiny", None)
        per_step = {s: latency(mixture, s, args.batch, args.steps) for s in ("top1", "top2", "full")}
        print(f"K={args.experts} tiny experts, batch {args.batch}, CPU: seconds per sampling step")
        for s, sec in per_step.items():
            print(f"  {s:5s} {sec:.4f} s  ({sec / per_step['top1']:.2f}x top1)")
        device = "cuda" if torch.cuda.is_available() else "cpu"  # on CPU an offloaded expert is already there
        capped = {name: latency(build("tiny", args.experts, f"{tmp}/tiny", cap, offload, device), "top2", args.batch,
                                args.steps)
                  for name, cap, offload in (("uncapped", None, False), ("offload", 2, True), ("disk", 2, False))}
        print(f"top2 with --max-resident-experts 2 ({device}): --offload {capped['offload']:.4f} s per step "
              f"({capped['offload'] / capped['uncapped']:.2f}x uncapped {capped['uncapped']:.4f} s), without it "
              f"{capped['disk']:.4f} s ({capped['disk'] / capped['uncapped']:.2f}x uncapped, "
              f"{capped['disk'] / capped['offload']:.2f}x --offload)")
        print(f"top1 with --route-every {args.route_every}: {latency(mixture, 'top1', args.batch, args.steps, args.route_every):.4f} s"
              f" per step (router calls per step: 1/{args.route_every})")
        print(f"router share of a top-1 step (expert at that size, batch {args.router_batch}, guided; "
              f"with --route-every N the router runs once per N steps):")
        for size in args.router_sizes.split(","):
            m = mixture if size == "tiny" else build(size, 1, f"{tmp}/{size.replace('/', '')}", None)
            router_s, expert_s = router_and_expert_seconds(m, args.router_batch, args.repeats)
            shares = ", ".join(f"every {n}: {router_s / n / (router_s / n + expert_s):.1%}"
                               for n in sorted({1, args.route_every}))
            print(f"  {size:5s} router {router_s:.3f} s, guided expert {expert_s:.3f} s; router share when routing {shares}")
        load = load_seconds(args.memory_preset, f"{tmp}/load", max(args.repeats, 5))
        print(f"loading one {args.memory_preset} expert: {load['paris']:.3f} s, against {load['random then copy']:.3f} s "
              f"built with random weights then copied ({load['paris'] / load['random then copy']:.2f}x); "
              f"reading the file's bytes {load['read']:.3f} s")
        k2 = peak_memory(args.memory_preset, 2, 2, f"{tmp}/mem")
        k8 = peak_memory(args.memory_preset, args.experts, 2, f"{tmp}/mem")
        print(f"peak memory of top-2 sampling with --max-resident-experts 2, {args.memory_preset} experts: "
              f"K=2 {k2:.0f} MiB, K={args.experts} {k8:.0f} MiB ({k8 / k2 - 1:+.1%})")


if __name__ == "__main__":
    main()
