"""The run directory: every artifact of a run, behind an fsspec URL (local path, s3://, gs://, memory://).

Each file is written whole to a temporary name and then moved into place, so a reader (or a job restarted
after being killed) never sees half a file. Pointers such as experts/<k>/LATEST are written last.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
from typing import Callable, TypeVar

import fsspec
import torch
from safetensors.torch import save as save_safetensors

from paris import layout, tensor_file
from paris.config import RunConfig, from_yaml, to_yaml
from paris.errors import ParisError


RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)  # seconds between the attempts of a read the store failed
# Packages whose exceptions are the network's (object-store clients and their HTTP stacks), not the data's.
TRANSPORTS = {"aiohttp", "botocore", "aiobotocore", "urllib3", "requests", "google", "gcsfs", "s3fs", "adlfs", "azure"}
T = TypeVar("T")


def _transient(error: Exception) -> bool:
    return isinstance(error, (ConnectionError, TimeoutError)) or type(error).__module__.split(".")[0] in TRANSPORTS


class RunDir:
    def __init__(self, url: str):
        self.url = str(url).rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)

    @property
    def is_local(self) -> bool:
        """Whether the run lives on this machine's file system (not an object store, not memory://)."""
        return self.fs.protocol in ("file", ("file", "local"))

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def list(self, rel: str) -> list[str]:
        """Names directly under `rel` (empty when it does not exist)."""
        return sorted(self.sizes(rel))

    def sizes(self, rel: str) -> dict[str, int]:
        """{name: size in bytes} of what is directly under `rel` (empty when it does not exist). Listed afresh:
        object-store clients cache listings, and another machine may have written here since."""
        self.fs.invalidate_cache(self.path(rel))
        try:
            listed = self.fs.ls(self.path(rel), detail=True)
        except FileNotFoundError:
            return {}
        return {p["name"].rstrip("/").rsplit("/", 1)[-1]: p["size"] for p in listed}

    def remove(self, rel: str) -> None:
        if self.exists(rel):
            self.fs.rm(self.path(rel), recursive=True)

    # --- whole-file reads and atomic writes -------------------------------------------------------
    def write_bytes(self, rel: str, data: bytes) -> None:
        final = self.path(rel)
        tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, final)
        except OSError as e:
            with contextlib.suppress(OSError):  # a write cut short (a full disk) leaves no temporary behind
                self.fs.rm(tmp)
            raise ParisError(f"cannot write {self.url}/{rel}: {e.strerror or e}; free space on its disk or check "
                             "that it is writable") from None

    def read_bytes(self, rel: str) -> bytes:
        return self.read_retrying(rel, lambda: self.fs.cat_file(self.path(rel)))

    def read_retrying(self, rel: str, read: Callable[[], T]) -> T:
        """read(): what the store holds of `rel`, asked again when the store fails transiently (a dropped
        connection, a timeout, a throttled request), RETRY_DELAYS apart, then one ParisError. fsspec's
        back ends retry a few times themselves; a store that stays away for seconds outlasts them."""
        for delay in (*RETRY_DELAYS, None):
            try:
                return read()
            except FileNotFoundError:
                raise ParisError(f"missing {self.url}/{rel}; {layout.next_step(rel)}") from None
            except Exception as e:
                if not _transient(e):
                    raise
                if delay is None:
                    raise ParisError(f"cannot read {self.url}/{rel} after {len(RETRY_DELAYS) + 1} attempts "
                                     f"({type(e).__name__}: {e}); check the connection to the store") from None
                time.sleep(delay)

    def write_json(self, rel: str, obj) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=2).encode())

    def read_json(self, rel: str):
        """A JSON file; one cut short or damaged (a crash while a non-atomic store wrote it) is a ParisError."""
        try:
            return json.loads(self.read_bytes(rel))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ParisError(f"{self.url}/{rel} is damaged (not valid JSON: {e}); {layout.remake(rel)}") from None

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode())

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode()

    def save_tensors(self, rel: str, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> str:
        """Write tensors as safetensors; returns the file's sha256."""
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
        data = save_safetensors(tensors, metadata=meta)
        self.write_bytes(rel, data)
        return hashlib.sha256(data).hexdigest()

    def sha256(self, rel: str) -> str:
        """The sha256 of a file's content, read a block at a time (a base model of gigabytes is never held whole)."""
        digest = hashlib.sha256()
        with self.fs.open(self.path(rel), "rb") as file:
            while block := file.read(1 << 24):
                digest.update(block)
        return digest.hexdigest()

    def load_tensors(self, rel: str, sha256: str | None = None, remedy: str = "") -> dict[str, torch.Tensor]:
        """Read a safetensors file, its header checked first (paris.tensor_file: a damaged file is one ParisError,
        `remedy` its advice); with `sha256`, refuse one whose content does not match. A local file with no hash
        to check is memory-mapped."""
        if sha256 is None:
            return tensor_file.load_tensors(self, rel, remedy)
        data = self.read_bytes(rel)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ParisError(f"{self.url}/{rel} is corrupt: its sha256 does not match the one recorded with it")
        return tensor_file.parse(data, f"{self.url}/{rel}", remedy)[0]

    # --- the run's config -------------------------------------------------------------------------
    def read_config(self) -> RunConfig:
        """The run's config.yaml: what every command of a run reads it through."""
        return from_yaml(self.read_text(layout.CONFIG), where=f"{self.url}/{layout.CONFIG}", written_by_paris=True)

    def write_config(self, config: RunConfig) -> None:
        self.write_text(layout.CONFIG, to_yaml(config))

