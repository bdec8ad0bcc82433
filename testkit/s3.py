"""A real S3-compatible server for tests: moto's server mode on 127.0.0.1, reached by plain s3:// URLs through
s3fs exactly as a user's run reaches AWS or MinIO, and a TCP proxy in front of it that drops connections.

    with s3_server() as url:                   # "s3://paris-test-1a2b3c4d", an empty bucket
        run = RunDir(f"{url}/run")
        with flaky_endpoint() as proxy:        # s3:// now goes through the proxy
            proxy.cut(1, after=256 * 1024)     # the next response is cut after 256 KiB
            run.read_bytes("big")

Tests share one server (`S3Server`, a session fixture in tests/conftest.py) and take a fresh bucket each
(`S3Server.bucket()`, the `s3_bucket` fixture); `s3_server()` is both for a script.

The endpoint is configured the way a user configures one, with environment variables that botocore reads
(AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION), never with arguments to
s3fs, so the tests take the users' code path. Both context managers restore the environment when they end and
clear s3fs's cache of file system instances (fsspec reuses one per set of arguments, and its client keeps the
endpoint it was made with).
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import urllib.request
import uuid
from contextlib import contextmanager
from typing import Iterator

ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL_S3"  # botocore >= 1.31: the endpoint of one service (AWS_ENDPOINT_URL: all)

# What the server needs and nothing of the user's: no shared config or credentials files, no profile, no
# instance-metadata lookups, no HTTP proxy between the client and 127.0.0.1.
_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
    "NO_PROXY": "127.0.0.1",
    "no_proxy": "127.0.0.1",
}
_UNSET = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL",
          "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")


@contextmanager
def _environment(values: dict[str, str], unset: tuple[str, ...] = ()) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in (*values, *unset)}
    os.environ.update(values)
    for k in unset:
        os.environ.pop(k, None)
    _clear_s3fs_instances()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _clear_s3fs_instances()


def _clear_s3fs_instances() -> None:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


class S3Server:
    """moto's S3 server on a free port of 127.0.0.1, started by `with`; its buckets live in this process.
    Starting one takes about 0.2 s and stopping it 0.5 s (werkzeug's poll), so tests share one (a session
    fixture) and take a fresh bucket each (`bucket()`)."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint = ""

    def __enter__(self) -> "S3Server":
        self._werkzeug_log = logging.getLogger("werkzeug")  # the server logs every request to stderr
        self._level = self._werkzeug_log.level
        self._werkzeug_log.setLevel(logging.ERROR)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc) -> None:
        try:  # moto keeps every server's buckets in the same objects of this process: drop them with this one
            urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"),
                                   timeout=10).close()
        finally:
            self._server.stop()
            self._werkzeug_log.setLevel(self._level)

    @contextmanager
    def bucket(self, name: str | None = None) -> Iterator[str]:
        """Point s3:// at this server, create bucket `name` (a fresh one by default) and yield "s3://<name>";
        afterwards the bucket is deleted and the environment is as it was."""
        import fsspec

        name = name or f"paris-test-{uuid.uuid4().hex[:8]}"
        with _environment({**_ENVIRONMENT, ENDPOINT_VARIABLE: self.endpoint}, _UNSET):
            fsspec.filesystem("s3").mkdir(name)
            try:
                yield f"s3://{name}"
            finally:
                _clear_s3fs_instances()  # a test may have pointed s3:// elsewhere (flaky_endpoint) and left it so
                os.environ[ENDPOINT_VARIABLE] = self.endpoint
                fsspec.filesystem("s3").rm(name, recursive=True)


@contextmanager
def s3_server(bucket: str | None = None) -> Iterator[str]:
    """A server of its own and a bucket on it: "s3://<bucket>" (see S3Server.bucket)."""
    with S3Server() as server, server.bucket(bucket) as url:
        yield url


@contextmanager
def flaky_endpoint() -> Iterator["FlakyProxy"]:
    """Inside `s3_server`: put a FlakyProxy in front of the server and point s3:// at the proxy."""
    upstream = os.environ[ENDPOINT_VARIABLE]
    host, port = upstream.removeprefix("http://").rsplit(":", 1)
    with FlakyProxy(host, int(port)) as proxy, _environment({ENDPOINT_VARIABLE: proxy.endpoint}):
        yield proxy


class FlakyProxy:
    """A TCP proxy on 127.0.0.1 that forwards everything until told to drop connections.

    `cut(n, after, method="GET")`: the responses to the next `n` requests of that HTTP method (None: any) are
    dropped once `after` bytes of each, headers included, have reached the client, as a network that fails
    mid-read does: both sockets are closed, the client's with a FIN (`reset=True`: an RST). A request is
    recognised by the method at the start of what the client sends, which is enough for HTTP/1.1 clients
    that do not pipeline (botocore, aiohttp). `cuts` counts the responses dropped so far, so a test can check
    that its failure happened; `connections` counts the connections opened.
    """

    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._pending = 0  # requests whose responses are still to cut
        self._after = 0
        self._reset = False
        self._method: bytes | None = b"GET "
        self.cuts = 0
        self.connections = 0
        self._sockets: set[socket.socket] = set()
        self._pumps: list[threading.Thread] = []
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True, name="flaky-proxy")

    def cut(self, n: int = 1, after: int = 0, reset: bool = False, method: str | None = "GET") -> None:
        with self._lock:
            self._pending, self._after, self._reset = n, after, reset
            self._method = None if method is None else f"{method} ".encode()

    def __enter__(self) -> "FlakyProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept(), which close() alone does not
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for s in sockets:
            _close(s)
        for thread in [self._thread, *self._pumps]:
            thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                _close(client)
                continue
            server.settimeout(None)
            with self._lock:
                self.connections += 1
                self._sockets.update((client, server))
            cut = _Cut()  # what the request pump tells the response pump of the same connection
            for pump in (threading.Thread(target=self._requests, args=(client, server, cut), daemon=True),
                         threading.Thread(target=self._responses, args=(server, client, cut), daemon=True)):
                pump.start()
                self._pumps.append(pump)

    def _requests(self, client: socket.socket, server: socket.socket, cut: "_Cut") -> None:
        try:
            while data := client.recv(65536):
                with self._lock:
                    if self._pending > 0 and cut.budget is None and (
                            self._method is None or data.startswith(self._method)):
                        self._pending -= 1
                        cut.budget, cut.reset = self._after, self._reset
                server.sendall(data)  # after marking: the response cannot arrive before its cut is known
        except OSError:
            pass
        finally:
            self._forget(client, server)

    def _responses(self, server: socket.socket, client: socket.socket, cut: "_Cut") -> None:
        try:
            while data := server.recv(65536):
                budget = cut.budget
                if budget is not None and len(data) >= budget:
                    client.sendall(data[:budget])
                    with self._lock:
                        self.cuts += 1
                    if cut.reset:  # closed with linger 0: an RST, not a FIN (SHUT_RD sends nothing, wakes recv)
                        client.shutdown(socket.SHUT_RD)
                        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        client.close()
                    return
                if budget is not None:
                    cut.budget = budget - len(data)
                client.sendall(data)
        except OSError:
            pass
        finally:
            self._forget(server, client)

    def _forget(self, *sockets: socket.socket) -> None:
        for s in sockets:
            _close(s)
        with self._lock:
            self._sockets.difference_update(sockets)


class _Cut:
    budget: int | None = None  # bytes of the marked response still to forward before the cut; None: no cut
    reset = False


def _close(s: socket.socket) -> None:
    """Close a socket, waking a thread blocked reading it."""
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
