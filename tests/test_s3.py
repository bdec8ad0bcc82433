"""The run directory on S3, beyond what test_run.py checks on every back end (S3 among them): a real S3 server
(moto's, on 127.0.0.1) reached through s3fs by a plain s3:// URL, as a user's run reaches AWS; a missing bucket;
listings that see other machines' files; and reads that survive a connection dropped mid-response
(testkit.s3.FlakyProxy)."""

from __future__ import annotations

import os
import urllib.request

import fsspec
import pytest

from paris.data.sources import filesystem
from paris.errors import ParisError
from paris.run import RunDir
from testkit.s3 import ENDPOINT_VARIABLE, flaky_endpoint

MIB = 1 << 20


@pytest.fixture
def run(s3_bucket):
    return RunDir(f"{s3_bucket}/run/")  # trailing slash is ignored


def test_s3_urls_reach_the_local_server(run, s3_bucket):
    """s3:// goes to the test's server (configured by the environment, as a user would) and the bytes are there:
    another client, and a plain HTTP GET of a presigned URL, read what RunDir wrote."""
    endpoint = os.environ[ENDPOINT_VARIABLE]
    assert endpoint.startswith("http://127.0.0.1:")
    assert run.fs.protocol[0] == "s3" and not run.is_local
    run.write_text("a/note.txt", "hello")
    fs, path = filesystem(f"{s3_bucket}/run/a/note.txt")  # the data sources' way to open a URL
    assert fs.cat_file(path) == b"hello"
    other = fsspec.filesystem("s3", skip_instance_cache=True)
    assert other.cat_file(run.path("a/note.txt")) == b"hello"
    url = other.url(run.path("a/note.txt"), expires=60)
    assert url.startswith(f"{endpoint}/")
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"hello"


def test_writes_leave_only_the_files_in_the_bucket(run):
    """The bucket itself, listed by another client (no cache): the files written, no temporaries."""
    run.write_json("a/b/c.json", {"x": [1, 2]})
    run.write_text("a/note.txt", "hello")
    run.write_text("a/note.txt", "hello again")
    keys = fsspec.filesystem("s3", skip_instance_cache=True).find(run.root)
    assert sorted(k.removeprefix(f"{run.root}/") for k in keys) == ["a/b/c.json", "a/note.txt"]


def test_missing_bucket_is_a_paris_error(s3_bucket):
    run = RunDir(f"{s3_bucket}-missing/run")
    with pytest.raises(ParisError, match=f"missing {run.url}/config.yaml"):
        run.read_config()
    assert not run.exists("config.yaml") and run.list("") == []


def test_listing_sees_files_another_machine_wrote(run):
    run.write_text("experts/0/LATEST", "step-6")
    assert run.list("experts") == ["0"]
    other = fsspec.filesystem("s3", skip_instance_cache=True)  # another machine's client
    other.pipe_file(run.path("experts/1/LATEST"), b"step-6")
    assert run.exists("experts/1/LATEST")
    assert run.list("experts") == ["0", "1"]


# --- connections dropped mid-read -----------------------------------------------------------------------------
@pytest.fixture
def big(run):
    """A 4 MiB object, written directly; then s3:// goes through a FlakyProxy. (run, its bytes, the proxy)."""
    data = os.urandom(4 * MIB)
    run.write_bytes("big", data)
    with flaky_endpoint() as proxy:
        yield RunDir(run.url), data, proxy  # a new RunDir: the old one's client talks to the server directly


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_a_read_survives_a_connection_dropped_mid_response(big, reset):
    run, data, proxy = big
    assert run.read_bytes("big") == data and proxy.cuts == 0  # through the proxy
    proxy.cut(1, after=256 * 1024, reset=reset)
    assert run.read_bytes("big") == data
    assert proxy.cuts == 1  # the drop happened: s3fs read the object again


def test_a_byte_range_survives_dropped_connections(big):
    run, data, proxy = big
    proxy.cut(2, after=100 * 1024)
    assert run.fs.cat_file(run.path("big"), start=MIB, end=3 * MIB + 5) == data[MIB:3 * MIB + 5]
    assert proxy.cuts == 2
    proxy.cut(1, after=50)  # inside the response's headers
    assert run.fs.cat_file(run.path("big"), start=10, end=20) == data[10:20]
    assert proxy.cuts == 3


@pytest.mark.slow
def test_drops_that_outlast_s3fs_retries_are_retried_by_paris(big, monkeypatch):
    """s3fs makes 5 attempts (S3FileSystem.retries) at a read cut mid-body, then lets aiohttp's error out; paris
    asks again (RETRY_DELAYS apart), and only a store that never answers is one ParisError."""
    from paris import run as run_module

    monkeypatch.setattr(run_module, "RETRY_DELAYS", (0.0, 0.0))
    run, data, proxy = big
    proxy.cut(6, after=256 * 1024)  # one more than s3fs tries
    assert run.read_bytes("big") == data and proxy.cuts == 6
    proxy.cut(10**6, after=256 * 1024)  # the store is gone for good
    with pytest.raises(ParisError, match=r"cannot read s3://.*/big after 3 attempts \(ClientPayloadError"):
        run.read_bytes("big")
    proxy.cut(0)
    assert run.read_bytes("big") == data  # the connection is fine again
