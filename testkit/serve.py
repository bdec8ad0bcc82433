"""`paris serve` in a child process on a free port of 127.0.0.1, and the browser that opens its page: for the
tests (tests/test_serve.py) and the script that screenshots the page (benchmarks/screenshots.py); and the same
app in this process, for tests that send it many requests (tests/test_serve_fuzz.py)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

CHROMIUM = "/usr/bin/chromium"  # Debian's (`make browser`): Playwright drives it, no browser download
# No sandbox (containers run as root), no GPU, and none of Chromium's own calls home: it starts offline.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_file: object  # the server's stderr: a file, since a pipe nobody reads would stall a talkative server

    def log(self) -> str:
        """What the server wrote to stderr so far."""
        self.log_file.seek(0)
        return self.log_file.read()


@contextlib.contextmanager
def serving(model: str | Path, *options: str, env: dict[str, str] | None = None,
            start_timeout: float = 120.0) -> Iterator[Server]:
    """`paris serve MODEL OPTIONS` until the block ends, once /healthz answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryFile("w+") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "paris", "serve", str(model), "--port", str(port), *options],
                                   env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, stdout=subprocess.DEVNULL,
                                   stderr=log_file, text=True)
        server = Server(f"http://127.0.0.1:{port}", process, log_file)
        try:
            _wait_for_health(server, start_timeout)
            yield server
        finally:
            process.terminate()
            process.wait(timeout=30)


@contextlib.contextmanager
def app_client(model: str | Path, api_key: str | None = None, max_body_bytes: int | None = None,
               log_prompts: bool = False, **limits):
    """FastAPI's TestClient over the app `paris serve MODEL` makes, in this process (its engine at
    `client.app.state.engine`); `limits` are the Engine's."""
    from fastapi.testclient import TestClient

    from paris.inference.pipeline import ParisPipeline
    from paris.serve.app import MAX_BODY_BYTES, create_app
    from paris.serve.engine import Engine

    engine = Engine(ParisPipeline.from_pretrained(str(model)), **limits)
    app = create_app(engine, Path(model).name, api_key=api_key, max_body_bytes=max_body_bytes or MAX_BODY_BYTES,
                     log_prompts=log_prompts)
    app.state.engine = engine
    with TestClient(app) as client:
        yield client


def _wait_for_health(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{server.url}/healthz", timeout=1)
            return
        except OSError:
            if server.process.poll() is not None:
                raise RuntimeError(f"paris serve exited with {server.process.returncode}:\n{server.log()}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"paris serve did not answer within {timeout:.0f} s:\n{server.log()}") from None
            time.sleep(0.1)


def launch_chromium(playwright):
    """Debian's Chromium, headless, through Playwright."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
