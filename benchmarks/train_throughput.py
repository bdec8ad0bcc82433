"""Training throughput of one expert beside the reference DiT: achieved FLOP/s of a full step (forward,
backward, AdamW), seconds per step and samples/s, eager and through torch.compile.

FLOPs are counted with torch.utils.flop_counter on one step; the baseline measured in the same run is the
dense matmul throughput of the same device and dtype, so the ratio (model FLOP utilisation of what this
machine can actually do) stays meaningful on noisy machines. On GPU the share of the bf16 peak is printed too.

The reference is facebookresearch/DiT's model (benchmarks/dit_reference.py) at the same shape (hidden size,
depth, heads, patch, latents; our B/2 is its DiT-B/2), trained with the same optimiser, batch and precision.
It is class-conditional, ours cross-attends to text tokens, so ours does more FLOPs per step: compare
achieved FLOP/s, not seconds. The steps alternate (ours, ours compiled, reference, ours, ...); "x eager" is
the median over those rounds of a model's eager step time over its compiled one, and the ratio to the
reference the median of the rounds' ratios of achieved FLOP/s, ours / reference.

    .venv/bin/python benchmarks/train_throughput.py                                  # tiny and B/2 on CPU
    .venv/bin/python benchmarks/train_throughput.py --presets tiny --batch 16,64 --threads 1 --no-reference
    python benchmarks/train_throughput.py --presets XL/2 --batch 32 --device cuda --compile both   # on a GPU
    python benchmarks/train_throughput.py --compile none   # eager only
    python benchmarks/train_throughput.py --presets B/2 --no-reference              # ours alone
    python benchmarks/train_throughput.py --presets XL/2 --batch 128 --device cuda --profile   # where time goes

`--profile` also prints, for each model, where one step's time goes: GPU kernel time (CPU op time on a CPU)
summed by kind (matmul, attention, normalisation, optimiser, ...) and the share of the step's wall time the
GPU spent busy; a low share means the step is bound by launching kernels, not by computing them.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from dit_reference import PRESETS as REFERENCE_PRESETS
from dit_reference import DiT as ReferenceDiT
from paris.config import DiTConfig, dit_config
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


def measure(preset: str, batch: int, steps: int, device: str, bf16: bool, compile: str, reference: bool,
            profile_steps: int = 0) -> list[dict]:
    """Our expert's training step, eager and (unless `compile` is none) compiled, and with `reference` the
    reference DiT's at the same shape (compiled too with `compile` both), timed in interleaved rounds (ours,
    ours compiled, reference, ours, ...) so that machine noise falls on all alike."""
    config = dit_config(preset, text_dim=384) if preset in ("tiny", "nano") else dit_config(preset)
    built = [("ours", *_our_step(config, preset, batch, device, bf16))]
    if reference:
        built.append((_reference_name(config), *_reference_step(config, batch, device, bf16)))
    flops, runs = [], []
    for name, model, make_step in built:
        # FLOPs are counted on the eager model: torch.compile never compiles a function first called under
        # FlopCounterMode (it leaves the frame to eager for good), which would time eager steps as compiled ones.
        with FlopCounterMode(display=False) as counter:
            make_step(model)()
        runs.append((name, model, make_step(model)))
        if compile == "both" or (compile == "ours" and name == "ours"):
            runs.append((f"{name} (compiled)", model, make_step(torch.compile(model))))
        flops += [counter.get_total_flops()] * (len(runs) - len(flops))
    for _ in range(2):  # warm-up (and compilation)
        for _, _, step in runs:
            step()
    seconds = [[] for _ in runs]
    for _ in range(steps):
        for (_, _, step), times in zip(runs, seconds):
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            times.append(time.perf_counter() - start)
    rows = [{"model": name, "params_m": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
             "seconds": statistics.median(times), "flops_per_step": f, "flops_per_s": f / statistics.median(times)}
            for (name, model, _), f, times in zip(runs, flops, seconds)]
    for row, times in zip(rows, seconds):
        row["times"] = times
    if profile_steps:
        for row, (_, _, step) in zip(rows, runs):
            row["profile"] = time_by_kind(step, device, profile_steps)
    return rows


KINDS = {  # substrings of kernel (or CPU op) names -> kind; the first match wins
    "attention": ("flash", "fmha", "attention", "cudnn"),
    "matmul": ("gemm", "nvjet", "cutlass", "xmma", "sm90_", "sm80_", "mm", "linear", "conv"),
    "optimiser": ("multi_tensor", "adam", "foreach"),
    "normalisation": ("layer_norm", "norm"),
    "compiled (triton, inductor)": ("triton", "compiledfxgraph"),
    "copy / cast": ("copy", "cat", "to_copy", "clone", "contiguous", "transpose", "permute"),
}


def _kind(name: str) -> str:
    name = name.lower()
    return next((kind for kind, keys in KINDS.items() if any(k in name for k in keys)), "other elementwise")


def time_by_kind(step, device: str, steps: int) -> dict:
    """Seconds per step by kind of GPU kernel (self CPU time of ops on a CPU), the wall time per step and the
    top kernels, from the torch profiler over `steps` steps."""
    activity = ProfilerActivity.CUDA if device == "cuda" else ProfilerActivity.CPU
    _sync(device)
    with profile(activities=[activity]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        wall = (time.perf_counter() - start) / steps
    kinds, names = collections.Counter(), collections.Counter()
    for event in prof.key_averages():
        if device == "cuda":  # kernels only: CPU-side ops also carry the device time of the kernels they launch
            seconds = event.self_device_time_total / 1e6 / steps if event.device_type.name == "CUDA" else 0.0
        else:
            seconds = event.self_cpu_time_total / 1e6 / steps
        if seconds > 0:
            kinds[_kind(event.key)] += seconds
            names[event.key] += seconds
    return {"wall": wall, "kinds": dict(kinds.most_common()), "top": names.most_common(8)}


def print_profile(model: str, timing: dict) -> None:
    busy = sum(timing["kinds"].values())
    print(f"  {model}: {timing['wall'] * 1e3:.1f} ms per step, {busy * 1e3:.1f} ms of it busy "
          f"({busy / timing['wall']:.0%})")
    for kind, seconds in timing["kinds"].items():
        print(f"    {kind:<27} {seconds * 1e3:8.2f} ms {seconds / busy:6.1%}")
    for name, seconds in timing["top"]:
        print(f"      {seconds / busy:6.1%}  {name[:110]}")


def _our_step(config: DiTConfig, preset: str, batch: int, device: str, bf16: bool):
    """(model, make_step): make_step(forward) is one training step through `forward` (the model, or it compiled)."""
    model = DiT(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as paris.train.loop
    x0 = torch.randn(batch, config.in_channels, config.input_size, config.input_size, device=device)
    text = torch.randn(batch, 77 if preset != "tiny" else 16, config.text_dim, device=device)
    generator = torch.Generator().manual_seed(0)

    def make_step(forward):
        def step():
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                loss = flow_matching_loss(forward, x0, "logit-normal", BatchRandom(batch, generator), text=text)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return step

    return model, make_step


def _reference_step(config: DiTConfig, batch: int, device: str, bf16: bool):
    """The reference DiT, class-conditional on ImageNet's 1000 classes, predicting only the noise
    (learn_sigma=False) so that its output has our shape; loss: MSE to the noise."""
    model = ReferenceDiT(config.input_size, config.patch_size, config.in_channels, config.hidden_size,
                         config.depth, config.num_heads, config.mlp_ratio, learn_sigma=False).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x0 = torch.randn(batch, config.in_channels, config.input_size, config.input_size, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)

    def make_step(forward):
        def step():
            t = torch.randint(0, 1000, (batch,), device=device)
            noise = torch.randn_like(x0)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                loss = F.mse_loss(forward(x0 + noise, t, labels).float(), noise)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return step

    return model, make_step


def _reference_name(config: DiTConfig) -> str:
    shape = (config.depth, config.hidden_size, config.patch_size, config.num_heads)
    return next((f"DiT-{name}" for name, preset in REFERENCE_PRESETS.items() if preset == shape), "DiT (ref)")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="tiny,B/2")
    parser.add_argument("--batch", default="", help="batch sizes, comma-separated (default: 64 for tiny and nano, "
                        "8 for others on a CPU, 64 on a GPU)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's, one per core); 1 is "
                        "how paris launch and the demo train experts on a CPU, one process per core")
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each model")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", choices=["none", "ours", "both"], default="ours",
                        help="also time ours compiled (default), or both models compiled, or neither")
    parser.add_argument("--attention", choices=["auto", "flash", "cudnn", "efficient"], default="auto",
                        help="the only attention kernel SDPA may use on a GPU (default: PyTorch's choice)")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="also profile STEPS steps of each model and print where the time goes")
    parser.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the reference DiT at the same shape (default: yes)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bf16 = args.device == "cuda"
    if args.attention != "auto" and args.device != "cuda":
        parser.error("--attention chooses among the GPU's attention kernels; leave it out on a CPU")
    if args.attention != "auto":  # every SDPA kernel off but the one asked for (math included)
        chosen = {"flash": "flash", "cudnn": "cudnn", "efficient": "mem_efficient"}[args.attention]
        for kernel in ("flash", "cudnn", "mem_efficient", "math"):
            getattr(torch.backends.cuda, f"enable_{kernel}_sdp")(kernel == chosen)
    if bf16:
        torch.backends.cuda.matmul.allow_tf32 = True
    dtype = torch.bfloat16 if bf16 else torch.float32
    baseline = matmul_flops_per_s(args.device, dtype, 8192 if bf16 else 2048)
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; dense {dtype} matmul baseline {baseline / 1e12:.3f} TFLOP/s")
    peak = next((v for k, v in BF16_PEAK.items() if k in name), None) if bf16 else None
    print(f"{'preset':>6} {'model':>22} {'params':>8} {'batch':>5} {'s/step':>8} {'samples/s':>10} {'x eager':>7} "
          f"{'GFLOP/step':>11} {'TFLOP/s':>8} {'of matmul':>9}" + (f" {'of bf16 peak':>12}" if peak else ""))
    for preset in args.presets.split(","):
        for batch in [int(b) for b in args.batch.split(",")] if args.batch else [_default_batch(preset, args.device)]:
            rows = measure(preset, batch, args.steps, args.device, bf16, args.compile, args.reference, args.profile)
            print_rows(preset, batch, rows, baseline, peak)


def _default_batch(preset: str, device: str) -> int:
    return 64 if preset in ("tiny", "nano") or device == "cuda" else 8


def print_rows(preset: str, batch: int, rows: list[dict], baseline: float, peak: float | None) -> None:
    """A line per model, its speed-up over the same model's eager step (median of the rounds' ratios), then
    ours against the reference, eager with eager and compiled with compiled, in achieved FLOP/s."""
    by_name = {r["model"]: r for r in rows}
    for r in rows:
        eager = by_name[r["model"].removesuffix(" (compiled)")]
        speedup = statistics.median(e / t for e, t in zip(eager["times"], r["times"]))
        print(f"{preset:>6} {r['model']:>22} {r['params_m']:7.1f}M {batch:5d} {r['seconds']:8.4f} "
              f"{batch / r['seconds']:10.1f} {speedup:7.2f} {r['flops_per_step'] / 1e9:11.1f} "
              f"{r['flops_per_s'] / 1e12:8.3f} {r['flops_per_s'] / baseline:9.1%}"
              + (f" {r['flops_per_s'] / peak:12.1%}" if peak else ""))
    for ref in rows:
        ours = by_name.get("ours" + ref["model"][len(ref["model"].removesuffix(" (compiled)")):])
        if ref["model"].startswith("ours") or ours is None:
            continue
        ratios = [ours["flops_per_step"] / o * r / ref["flops_per_step"] for o, r in zip(ours["times"], ref["times"])]
        print(f"{preset:>6} {ours['model']} / {ref['model']}: achieved FLOP/s x{statistics.median(ratios):.3f} "
              f"(median of {len(ratios)} interleaved rounds, {min(ratios):.3f} to {max(ratios):.3f}); FLOPs per "
              f"step x{ours['flops_per_step'] / ref['flops_per_step']:.3f}, seconds per step "
              f"x{ours['seconds'] / ref['seconds']:.3f}")
    for r in rows:
        if "profile" in r:
            print_profile(r["model"], r["profile"])

if __name__ == "__main__":
    main()
