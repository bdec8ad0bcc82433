"""Damaged safetensors files, made from real ones: cut, with their header or bytes altered, or not safetensors at
all (a pickle under the safetensors name). What the loader tests feed every loading entry of paris."""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from safetensors.torch import load


def _split(data: bytes) -> tuple[dict, bytes]:
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def _joined(header, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors aligns the data to 8 bytes
    return len(raw).to_bytes(8, "little") + raw + body


def _edit(data: bytes, edit, last: bool = False) -> bytes:
    """The file with `edit(info)` applied to its first (or last) tensor's header entry, in offset order."""
    header, body = _split(data)
    names = sorted((name for name in header if name != "__metadata__"), key=lambda n: header[n]["data_offsets"][0])
    edit(header[names[-1] if last else names[0]])
    return _joined(header, body)


def _pickle(data: bytes) -> bytes:
    buffer = io.BytesIO()
    torch.save(load(data), buffer)
    return buffer.getvalue()


def _beyond_the_file(info: dict) -> None:
    """A thousand times the rows, shape and offsets agreeing: the tensor ends far past the file."""
    first, end = info["data_offsets"]
    info["shape"] = [info["shape"][0] * 1000, *info["shape"][1:]] if info["shape"] else [1000]
    info["data_offsets"] = [first, first + (end - first) * 1000]


def _wrong_shape(info: dict) -> None:
    info["shape"] = [n + 1 for n in info["shape"]] or [2]


def _header_length(data: bytes, length: int) -> bytes:
    return length.to_bytes(8, "little") + data[8:]


# name -> (damage: bytes of a good file -> bytes of a bad one, words the one-line error must hold)
DAMAGES = {
    "empty": (lambda data: b"", "too short to hold a header"),
    "cut-in-length": (lambda data: data[:5], "too short to hold a header"),
    "cut-in-header": (lambda data: data[:40], "too few for the header it begins with"),
    "cut-in-data": (lambda data: data[:-12], "(cut short?)"),
    "absurd-header-length": (lambda data: _header_length(data, 2**62), "too few for the header it begins with"),
    "header-not-json": (lambda data: data[:8] + b"\x00\xff" + data[10:], "its header is not JSON"),
    "header-a-list": (lambda data: _joined([1, 2], _split(data)[1]), "its header is not a JSON object"),
    "unknown-dtype": (lambda data: _edit(data, lambda info: info.update(dtype="F9")), "has dtype 'F9'"),
    "size-beyond-file": (lambda data: _edit(data, _beyond_the_file, last=True), "the file holds"),
    "shape-not-offsets": (lambda data: _edit(data, _wrong_shape), "needs"),
    "negative-shape": (lambda data: _edit(data, lambda info: info.update(shape=[-1])), "not a list of counts"),
    "no-offsets": (lambda data: _edit(data, lambda info: info.pop("data_offsets")), "lacks dtype, shape"),
    "trailing-bytes": (lambda data: data + b"\x00" * 16, "the file holds"),
    "pickle": (_pickle, "is a pickle checkpoint (torch.save), not safetensors"),
}


def damage(file: Path, name: str) -> str:
    """Damage `file` in place the way DAMAGES[name] says; returns the words its error must hold."""
    make, words = DAMAGES[name]
    file.write_bytes(make(file.read_bytes()))
    return words
