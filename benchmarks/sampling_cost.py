"""What a mixture costs at sampling time: latency per routing rule and precision, a residency cap with and
without --offload, the router's share, and peak memory.

Experts and router have random weights (the cost does not depend on training), and so have the text token
states (RandomText): no text model is needed. The experts of the latency and router figures are made in
memory on --device; those of the cap, load and memory figures are saved to disk and loaded lazily, as
ParisPipeline does. Figures are ratios measured in the same run.

    .venv/bin/python benchmarks/sampling_cost.py                        # K=8 tiny experts; memory with B/2 experts
    .venv/bin/python benchmarks/sampling_cost.py --router-sizes tiny,B/2,XL/2 --route-every 4
    python benchmarks/sampling_cost.py --device cuda --preset XL/2 --batches 1,8 --steps 50 \
        --precisions fp32,bf16,bf16+compile --figures latency,router-share --router-sizes XL/2   # on a GPU
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

import torch

from paris.config import SampleConfig, dit_config, router_config
from paris.models.dit import DiT
from paris.models.encoders import IdentityAutoencoder
from paris.models.router import Router
from paris.precision import sampling_precision
from paris.inference.mixture import ExpertPool, Mixture
from paris.inference.sampler import generate, peak_memory_mib

PROMPTS = ["a photo of a sneaker", "a photo of a bag", "a photo of a dress", "a picture of a coat"]
PRECISIONS = ("fp32", "bf16", "bf16+compile")  # paris.precision's names; +compile: sample.compile


class RandomText:
    """Text token states drawn at random, `tokens` of them, every one attended as CLIP's are in Paris: a
    sampling step costs the same whatever the text says."""

    def __init__(self, dim: int, tokens: int):
        self.dim, self.tokens = dim, tokens

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        states = torch.randn(len(prompts), self.tokens, self.dim, generator=torch.Generator().manual_seed(0))
        return states, torch.ones(len(prompts), self.tokens, dtype=torch.bool)


def build(preset: str, num_experts: int, folder: str | None, max_resident: int | None = None, offload: bool = False,
          device: str = "cpu", text_tokens: int = 77) -> Mixture:
    """K randomly initialised experts of `preset` and a random router (tiny next to tiny experts, else Paris's
    B/2). The experts are saved under `folder` and loaded lazily, or with no folder made on `device` at once."""
    config = dit_config(preset)
    if folder is None:
        experts = [_randomised(DiT, config, k, device) for k in range(num_experts)]
        loaders = [lambda expert=expert: expert for expert in experts]
    else:
        from paris.models.io import load_pretrained, save_pretrained  # the disk needs fsspec and safetensors
        from paris.run import RunDir

        run = RunDir(folder)
        for k in range(num_experts):
            if not run.exists(f"expert_{k}/config.json"):
                save_pretrained(run, f"expert_{k}", _randomised(DiT, config, k))
        loaders = [lambda k=k: load_pretrained(run, f"expert_{k}") for k in range(num_experts)]
    router = router_config("tiny" if preset == "tiny" else "B/2", in_channels=config.in_channels,
                           input_size=config.input_size, num_experts=num_experts)
    shape = (config.in_channels, config.input_size, config.input_size)
    return Mixture(ExpertPool(loaders, max_resident, device, offload), _randomised(Router, router, 100, device).eval(),
                   RandomText(config.text_dim, text_tokens), IdentityAutoencoder(), shape)


def _randomised(network: type, config, seed: int, device: str = "cpu"):
    """network(config) initialised from `seed` on `device` (on a GPU in a moment, where an XL/2 takes seconds on
    a CPU), its zero-initialised layers made random too: velocities and routing are not trivially zero/uniform."""
    torch.manual_seed(seed)
    with torch.device(device), torch.no_grad():
        model = network(config)
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    return model


def latency(mixture: Mixture, strategy: str, batch: int, steps: int, route_every: int = 1,
            precision: str = "fp32") -> float:
    """Seconds per step of `generate` (the whole call, divided by `steps`); `precision`: one of PRECISIONS."""
    prompts = (PROMPTS * batch)[:batch]
    options = {"precision": precision.removesuffix("+compile"), "compile": precision.endswith("+compile")}
    # Warm-up: loads every expert; compiling, the very same call, so that every sub-batch size it routes to an
    # expert is compiled before the timing starts.
    generate(mixture, prompts, SampleConfig().updated(strategy=strategy, steps=steps if options["compile"] else 2, route_every=route_every, **options))
    start = time.perf_counter()
    generate(mixture, prompts, SampleConfig().updated(strategy=strategy, steps=steps, route_every=route_every, **options))
    return (time.perf_counter() - start) / steps


def seconds(fn, repeats: int, device: torch.device) -> float:
    """Mean wall time of fn() after one warm-up call."""
    with torch.no_grad():
        fn()
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        _sync(device)
    return (time.perf_counter() - start) / repeats


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def router_and_expert_seconds(mixture: Mixture, batch: int, repeats: int, precision: str = "fp32") -> tuple[float, float]:
    """One router pass and one guided expert pass (cond + uncond batched, as in a top-1 step) on `batch` samples,
    both in `precision` (uncompiled)."""
    device = mixture.experts.device
    x, t = torch.randn(batch, *mixture.latent_shape, device=device), torch.full((batch,), 0.5, device=device)
    text = mixture.text_encoder.encode(PROMPTS[:1] * 2 * batch)[0].to(device)
    expert = mixture.experts[0]
    with sampling_precision(precision.removesuffix("+compile"), device):
        return (seconds(lambda: mixture.router(x, t), repeats, device),
                seconds(lambda: expert(torch.cat([x, x]), torch.cat([t, t]), text), repeats, device))


def load_seconds(preset: str, folder: str, repeats: int) -> dict[str, float]:
    """Seconds to load one saved expert, best of `repeats`: reading the file's bytes; paris's load_pretrained
    (built on the meta device, the memory-mapped file's tensors assigned: pages are read on first use); and the
    way it used to load, built with random weights and the file's copied in (the baseline of the ratio,
    measured here in the same run)."""
    from paris.models.io import load_pretrained, save_pretrained
    from paris.run import RunDir

    run = RunDir(folder)
    if not run.exists("expert_0/config.json"):
        save_pretrained(run, "expert_0", DiT(dit_config(preset)))
    weights = "expert_0/diffusion_pytorch_model.safetensors"

    def copied_in():
        model = DiT(dit_config(preset))
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
    generate(mixture, PROMPTS, SampleConfig().updated(strategy="top2", steps=2))
    print(peak_memory_mib(torch.device("cpu")))


def peak_memory(preset: str, num_experts: int, max_resident: int, folder: str) -> float:
    out = subprocess.run([sys.executable, __file__, "--memory-child", preset, str(num_experts), str(max_resident), folder],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


FIGURES = ("latency", "cap", "route-every", "router-share", "load", "memory")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--figures", default=",".join(FIGURES), help="which to measure, of " + ", ".join(FIGURES))
    parser.add_argument("--device", default="cpu", help="of the latency, route-every and router-share figures")
    parser.add_argument("--preset", default="tiny", help="experts of the latency and route-every figures")
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--batches", default="16", help="comma-separated prompts per call")
    parser.add_argument("--steps", type=int, default=10, help="Euler steps per call (guided, as Paris samples)")
    parser.add_argument("--precisions", default="fp32", help="comma-separated, of " + ", ".join(PRECISIONS))
    parser.add_argument("--text-tokens", type=int, default=77, help="text tokens per prompt (CLIP: 77)")
    parser.add_argument("--router-sizes", default="tiny,B/2", help="expert presets to set the router beside")
    parser.add_argument("--router-batches", default="2", help="comma-separated samples per pass, router share")
    parser.add_argument("--route-every", type=int, default=4, help="also measure the router share with this interval")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-preset", default="B/2", help="experts of the memory and load-time figures")
    parser.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        preset, k, cap, folder = args.memory_child
        return peak_memory_child(preset, int(k), int(cap), folder)
    figures, precisions = args.figures.split(","), args.precisions.split(",")
    for name, given, known in (("figure", figures, FIGURES), ("precision", precisions, PRECISIONS)):
        if set(given) - set(known):
            parser.error(f"unknown {name} {', '.join(sorted(set(given) - set(known)))}; choose of {', '.join(known)}")
    batches = [int(b) for b in args.batches.split(",")]
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    mixture = build(args.preset, args.experts, None, device=args.device, text_tokens=args.text_tokens)

    if "latency" in figures:
        print(f"K={args.experts} {args.preset} experts, {where}: seconds per call of {args.steps} guided Euler steps "
              f"(per step; against top1)", flush=True)
        for precision in precisions:
            for batch in batches:
                per_step = {s: latency(mixture, s, batch, args.steps, precision=precision) for s in ("top1", "top2", "full")}
                print(f"  {precision:12s} batch {batch:3d}: " + ", ".join(
                    f"{s} {sec * args.steps:.3f} s ({sec * 1000:.1f} ms, {sec / per_step['top1']:.2f}x)"
                    for s, sec in per_step.items()), flush=True)
    if "cap" in figures:
        with tempfile.TemporaryDirectory() as tmp:
            where_cap = "cuda" if torch.cuda.is_available() else "cpu"  # on CPU an offloaded expert is already there
            capped = {name: latency(build("tiny", args.experts, f"{tmp}/tiny", cap, offload, where_cap), "top2",
                                    batches[0], args.steps)
                      for name, cap, offload in (("uncapped", None, False), ("offload", 2, True), ("disk", 2, False))}
        print(f"top2 with --max-resident-experts 2 ({where_cap}): --offload {capped['offload']:.4f} s per step "
              f"({capped['offload'] / capped['uncapped']:.2f}x uncapped {capped['uncapped']:.4f} s), without it "
              f"{capped['disk']:.4f} s ({capped['disk'] / capped['uncapped']:.2f}x uncapped, "
              f"{capped['disk'] / capped['offload']:.2f}x --offload)")
    if "route-every" in figures:
        seconds_n = latency(mixture, "top1", batches[0], args.steps, args.route_every, precisions[0])
        print(f"top1 with --route-every {args.route_every}: {seconds_n:.4f} s per step (router calls per step: "
              f"1/{args.route_every})")
    if "router-share" in figures:
        print(f"router share of a top-1 step (expert at that size, guided, {where}; with --route-every N the router "
              f"runs once per N steps):")
        for size in args.router_sizes.split(","):
            m = mixture if size == args.preset else build(size, 1, None, device=args.device, text_tokens=args.text_tokens)
            for precision in dict.fromkeys(p.removesuffix("+compile") for p in precisions):
                for batch in (int(b) for b in args.router_batches.split(",")):
                    router_s, expert_s = router_and_expert_seconds(m, batch, args.repeats, precision)
                    shares = ", ".join(f"every {n}: {router_s / n / (router_s / n + expert_s):.1%}"
                                       for n in sorted({1, args.route_every}))
                    print(f"  {size:5s} {precision} batch {batch}: router {router_s:.4f} s, guided expert "
                          f"{expert_s:.4f} s; router share when routing {shares}", flush=True)
            del m
    if "load" in figures:
        with tempfile.TemporaryDirectory() as tmp:
            load = load_seconds(args.memory_preset, f"{tmp}/load", max(args.repeats, 5))
        print(f"loading one {args.memory_preset} expert: {load['paris']:.3f} s, against {load['random then copy']:.3f} s "
              f"built with random weights then copied ({load['paris'] / load['random then copy']:.2f}x); "
              f"reading the file's bytes {load['read']:.3f} s")
    if "memory" in figures:
        with tempfile.TemporaryDirectory() as tmp:
            k2 = peak_memory(args.memory_preset, 2, 2, f"{tmp}/mem")
            k8 = peak_memory(args.memory_preset, args.experts, 2, f"{tmp}/mem")
        print(f"peak memory of top-2 sampling with --max-resident-experts 2, {args.memory_preset} experts: "
              f"K=2 {k2:.0f} MiB, K={args.experts} {k8:.0f} MiB ({k8 / k2 - 1:+.1%})")


if __name__ == "__main__":
    main()
