"""`paris serve` under load, on localhost: concurrent OpenAI-style clients against one server process.

First a sequential baseline (one client, one request at a time), then `--clients` clients sending
`--requests` requests each at once, every request with its own prompt and seed and the same settings, so the
server may batch them. Prints p50/p95 latency, throughput against the sequential one (a ratio from the same
server), errors, the batches the server formed, and the server's peak resident memory.

Then abuse: `--clients` - 1 good clients, once alone, once beside one client that sends nothing but oversized or
malformed requests (ABUSE), and once alone again. The abuser sends one as often as a good client sends its own
(every median latency of the first run alone), or with `--abuse-interval 0` as fast as they are answered: a flood,
hundreds a second, that no server answers for free on shared cores (rate limits per client are not paris's).
Prints the good clients' p95 with the abuser against their p95 without it (both runs alone pooled, so that a
drift of the machine shows in neither alone); the target is at most 1.2x.

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
import multiprocessing
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

PROMPTS = ["a photo of a sneaker", "a photo of a bag", "a photo of a dress", "a photo of a coat", "a photo of a shirt",
           "a photo of a sandal", "a photo of a trouser", "a photo of an ankle boot"]

# What the abusive client sends, in turn: each is refused with a 4xx (or the connection, for the oversized body).
ABUSE = [
    b'{"prompt": "a bag", "seed": 1' + b"0" * (2 << 20) + b"}",  # twice the default --max-body-bytes
    b'{"prompt": "a bag", "steps": ',  # cut short
    json.dumps({"prompt": "a bag " * 20_000}).encode(),  # 30x the longest prompt taken
    b"[" * 100_000 + b"]" * 100_000,  # nested too deep for Python's JSON parser
    json.dumps({"prompt": "a bag", "seed": 2**70}).encode(),  # past the generator's range
    b'{"prompt": "a bag", "guidance": Infinity}',
    json.dumps({"prompt": ["a bag"] * 10_000}).encode(),  # 10,000 images
    json.dumps({"prompt": {"text": "a bag"}, "n": True}).encode(),
]


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


def load(url: str, clients: int, requests: int, steps: int, first_seed: int) -> list[tuple[float, str | None]]:
    """`clients` clients sending `requests` requests each at once: (seconds, error or None) of each."""
    def client(i: int) -> list[tuple[float, str | None]]:
        return [request(url, PROMPTS[(i + j) % len(PROMPTS)], first_seed + 1000 * i + j, steps)
                for j in range(requests)]

    with ThreadPoolExecutor(clients) as pool:
        return [r for rs in pool.map(client, range(clients)) for r in rs]


def abuse(url: str, interval: float, stop, answered) -> None:
    """Send ABUSE in turn, one every `interval` seconds, until `stop`; then put how often each answer came (an
    HTTP status, or `refused`) on `answered`. Run in a process of its own: a thread would take the good clients'
    GIL, not the server's time."""
    answers, i = Counter(), 0
    while not stop.wait(interval if i else 0):
        http = urllib.request.Request(f"{url}/v1/images/generations", ABUSE[i % len(ABUSE)],
                                      {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(http, timeout=60) as response:
                answers[response.status] += 1
        except urllib.error.HTTPError as e:
            answers[e.code] += 1
        except OSError:  # the server answered 413 and closed before the whole body went
            answers["refused"] += 1
        i += 1
    answered.put(answers)


def p95(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def abused(url: str, clients: int, requests: int, steps: int, interval: float | None) -> None:
    """The good clients' p95 beside the abuser against their p95 alone (before and after, pooled)."""
    alone = load(url, clients - 1, requests, steps, 10**6)
    interval = statistics.median(s for s, _ in alone) if interval is None else interval
    stop, answered = multiprocessing.Event(), multiprocessing.Queue()
    abuser = multiprocessing.Process(target=abuse, args=(url, interval, stop, answered))
    abuser.start()
    beside = load(url, clients - 1, requests, steps, 2 * 10**6)
    stop.set()
    answers = answered.get()
    abuser.join()
    alone += load(url, clients - 1, requests, steps, 3 * 10**6)
    errors = [e for _, e in alone + beside if e]
    with_abuse, without = p95([s for s, _ in beside]), p95([s for s, _ in alone])
    print(f"abuse: {clients - 1} good clients x {requests} requests, p95 {without:.2f} s alone (two runs), "
          f"{with_abuse:.2f} s beside a client sending only bad requests, one every {interval:.2f} s = "
          f"{with_abuse / without:.2f}x (target <= 1.2x); its {sum(answers.values())} requests answered "
          f"{dict(sorted(answers.items(), key=str))}; "
          f"errors of the good clients: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))


def start_server(model: str, cap: int | None, max_batch: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "paris", "serve", model, "--port", str(port), "--max-batch", str(max_batch),
               "--log-level", "warning"]  # no line per request: nobody reads the pipe while it runs
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
    parser.add_argument("--no-abuse", action="store_true", help="leave out the run beside an abusive client")
    parser.add_argument("--abuse-interval", type=float, default=None, help="seconds between the abuser's requests "
                        "(default: a good request's median latency; 0: as fast as they are answered)")
    args = parser.parse_args()

    server, url = start_server(args.model, args.max_resident_experts, args.max_batch)
    try:
        request(url, PROMPTS[0], 0, args.steps)  # warm-up: experts loaded, kernels chosen
        started = time.perf_counter()
        sequential = [request(url, PROMPTS[i % len(PROMPTS)], i, args.steps) for i in range(args.sequential)]
        sequential_rate = args.sequential / (time.perf_counter() - started)
        total = args.clients * args.requests
        started = time.perf_counter()
        results = load(url, args.clients, args.requests, args.steps, 0)
        concurrent_rate = total / (time.perf_counter() - started)
        batches = json.load(urllib.request.urlopen(f"{url}/healthz"))["batches"] - 1 - args.sequential
        latencies = [seconds for seconds, _ in results]
        errors = [error for _, error in results if error] + [error for _, error in sequential if error]
        memory = peak_rss_mib(server.pid)
        report(args, sequential, sequential_rate, latencies, concurrent_rate, errors, batches, memory)
        if not args.no_abuse:
            abused(url, args.clients, args.requests, args.steps, args.abuse_interval)
    finally:
        server.terminate()
        server.wait(timeout=30)


def report(args, sequential, sequential_rate, latencies, concurrent_rate, errors, batches, memory) -> None:
    total = args.clients * args.requests
    print(f"model {args.model}, {args.steps} steps, max batch {args.max_batch}, "
          f"resident-expert cap {args.max_resident_experts or 'none'}")
    print(f"sequential: {args.sequential} requests, {statistics.median(s for s, _ in sequential):.2f} s each (median), "
          f"{sequential_rate:.2f} requests/s")
    print(f"concurrent: {args.clients} clients x {args.requests} requests: p50 {statistics.median(latencies):.2f} s, "
          f"p95 {p95(latencies):.2f} s, "
          f"{concurrent_rate:.2f} requests/s = {concurrent_rate / sequential_rate:.2f}x sequential")
    print(f"errors: {len(errors)}" + (f" (first: {errors[0]})" if errors else "") + f"; the {total} concurrent "
          f"requests ran in {batches} batches ({total / max(batches, 1):.1f} images per batch)")
    print(f"server peak resident memory: {memory:.0f} MiB")


if __name__ == "__main__":
    main()
