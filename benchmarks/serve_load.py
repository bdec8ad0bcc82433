"""`paris serve` under load, on localhost: concurrent OpenAI-style clients against one server process.

First a sequential baseline (one client, one request at a time), then `--clients` clients sending
`--requests` requests each at once, every request with its own prompt and seed and the same settings, so the
server may batch them. Prints p50/p95 latency, throughput against the sequential one (a ratio from the same
server), errors, the batches the server formed, and the server's peak resident memory.

    .venv/bin/python benchmarks/serve_load.py runs/demo                  # 8 clients x 10 requests
    .venv/bin/python benchmarks/serve_load.py runs/demo --max-resident-experts 1 --steps 25
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

PROMPTS = ["a photo of a sneaker", "a photo of a bag", "a photo of a dress", "a photo of a coat", "a photo of a shirt",
           "a photo of a sandal", "a photo of a trouser", "a photo of an ankle boot"]


def request(url: str, prompt: str, seed: int, steps: int) -> tuple[float, str | None]:
    """(seconds, error or None) of one POST /v1/images/generations with a b64_json answer."""
    body = json.dumps({"prompt": prompt, "n": 1, "response_format": "b64_json", "seed": seed, "steps": steps}).encode()
    started = time.perf_counter()
    try:
        http = urllib.request.Request(f"{url}/v1/images/generations", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(http, timeout=600) as response:
            answer = json.load(response)
        base64.b64decode(answer["data"][0]["b64_json"])
        return time.perf_counter() - started, None
    except (urllib.error.URLError, KeyError, ValueError) as e:
        return time.perf_counter() - started, str(e)


def start_server(model: str, cap: int | None, max_batch: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "paris", "serve", model, "--port", str(port), "--max-batch", str(max_batch)]
    command += ["--max-resident-experts", str(cap)] if cap else []
    server = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1)
            return server, url
        except OSError:
            if server.poll() is not None:
                raise SystemExit(f"the server did not start: {server.stderr.read()}")
            time.sleep(0.1)
    raise SystemExit("the server did not answer within 2 minutes")


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="runs/demo")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=10, help="per client")
    parser.add_argument("--sequential", type=int, default=8, help="requests of the sequential baseline")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-resident-experts", type=int, default=None)
    args = parser.parse_args()

    server, url = start_server(args.model, args.max_resident_experts, args.max_batch)
    try:
        request(url, PROMPTS[0], 0, args.steps)  # warm-up: experts loaded, kernels chosen
        started = time.perf_counter()
        sequential = [request(url, PROMPTS[i % len(PROMPTS)], i, args.steps) for i in range(args.sequential)]
        sequential_rate = args.sequential / (time.perf_counter() - started)
        total = args.clients * args.requests
        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            futures = [pool.submit(lambda i: [request(url, PROMPTS[(i + j) % len(PROMPTS)], 1000 * i + j, args.steps)
                                              for j in range(args.requests)], i) for i in range(args.clients)]
            results = [r for f in futures for r in f.result()]
        concurrent_rate = total / (time.perf_counter() - started)
        batches = json.load(urllib.request.urlopen(f"{url}/healthz"))["batches"] - 1 - args.sequential
        latencies = sorted(seconds for seconds, _ in results)
        errors = [error for _, error in results if error] + [error for _, error in sequential if error]
        memory = peak_rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    p50, p95 = statistics.median(latencies), latencies[max(0, round(0.95 * len(latencies)) - 1)]
    print(f"model {args.model}, {args.steps} steps, max batch {args.max_batch}, "
          f"resident-expert cap {args.max_resident_experts or 'none'}")
    print(f"sequential: {args.sequential} requests, {statistics.median(s for s, _ in sequential):.2f} s each (median), "
          f"{sequential_rate:.2f} requests/s")
    print(f"concurrent: {args.clients} clients x {args.requests} requests: p50 {p50:.2f} s, p95 {p95:.2f} s, "
          f"{concurrent_rate:.2f} requests/s = {concurrent_rate / sequential_rate:.2f}x sequential")
    print(f"errors: {len(errors)}" + (f" (first: {errors[0]})" if errors else "") + f"; the {total} concurrent "
          f"requests ran in {batches} batches ({total / max(batches, 1):.1f} images per batch)")
    print(f"server peak resident memory: {memory:.0f} MiB")


if __name__ == "__main__":
    main()
