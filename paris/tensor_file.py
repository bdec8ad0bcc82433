"""The one safetensors reader of paris: every file's header is checked against the file before anything is
allocated, so a damaged file, or one that is not safetensors at all (a pickle renamed), is one ParisError
naming the file and what is wrong, never a MemoryError, a struct.error or a KeyError deep in a load.

A safetensors file is an 8-byte little-endian header length, a JSON header ({name: {dtype, shape,
data_offsets}}, and __metadata__), then the tensors' bytes, which the offsets tile exactly. Readers take a
RunDir (duck-typed: this module sits below paris.run, which reads through it).
"""

from __future__ import annotations

import json
import math
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import load_file

from paris.errors import ParisError

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit: a larger length is damage, not a header
# How torch.save's files start (a zip archive; an old-style bare pickle): named, so the refusal says what it is.
PICKLE_STARTS = (b"PK\x03\x04", b"\x80")
PICKLE = ("is a pickle checkpoint (torch.save), not safetensors; pickles are refused (loading one can run code): "
          "convert it with safetensors.torch.save_file")
Read = Callable[[int, int], bytes]  # bytes [start, end) of the file


def read_header(run, rel: str, data: bool = True, remedy: str = "") -> tuple[dict, int]:
    """The checked header of `rel` in `run` ({name: {dtype, shape, data_offsets}}, and __metadata__ if any) and
    the offset where the tensors' bytes start. Reads the header alone. With `data` (the default) the file must
    hold every tensor's bytes; without, a file cut after its header still lists (convert-release --inspect)."""
    path = run.path(rel)
    size = run.read_retrying(rel, lambda: run.fs.size(path))
    read = lambda start, end: run.read_retrying(rel, lambda: run.fs.cat_file(path, start=start, end=end))  # noqa: E731
    return _checked_header(read, size, f"{run.url}/{rel}", data, remedy)


def load_tensors(run, rel: str, remedy: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of `rel`, after the header is checked; a local file is memory-mapped (pages are read as the
    tensors are used, and writes stay private), another is read whole."""
    if not run.is_local:
        return parse(run.read_bytes(rel), f"{run.url}/{rel}", remedy)[0]
    read_header(run, rel, remedy=remedy)
    return _safetensors(lambda: load_file(run.path(rel)), f"{run.url}/{rel}", remedy)


def parse(data: bytes, where: str, remedy: str = "") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the metadata (strings, as stored) of a whole safetensors file held in `data`."""
    header, _ = _checked_header(lambda start, end: data[start:end], len(data), where, True, remedy)
    return _safetensors(lambda: load_bytes(data), where, remedy), header.get("__metadata__", {})


def read_tensor(run, rel: str, name: str, header: dict, data_start: int) -> torch.Tensor:
    """One tensor of a file whose checked header (read_header) is `header`: only its own bytes are read."""
    info = header[name]
    first, end = (data_start + offset for offset in info["data_offsets"])
    raw = run.read_retrying(rel, lambda: run.fs.cat_file(run.path(rel), start=first, end=end))
    dtype = DTYPES[info["dtype"]]
    return (torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.zeros(0, dtype=dtype)).view(info["shape"])


def _checked_header(read: Read, size: int, where: str, data: bool, remedy: str) -> tuple[dict, int]:
    def refuse(problem: str):
        raise ParisError(f"{where} {problem}" + (f"; {remedy}" if remedy else ""))

    start = read(0, min(size, 8))
    length = int.from_bytes(start, "little")
    if size < 8 or length > min(size - 8, MAX_HEADER_BYTES):
        if start.startswith(PICKLE_STARTS):
            refuse(PICKLE)
        refuse(f"is not a safetensors file: {size} bytes, too few for the header it begins with" if size >= 8 else
               f"is not a safetensors file: {size} bytes, too short to hold a header")
    try:
        header = json.loads(read(8, 8 + length))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        refuse(f"is not a safetensors file: its header is not JSON ({e})")
    problem = header_problem(header, size - 8 - length if data else None)
    if problem:
        refuse(f"is damaged: {problem}")
    return header, 8 + length


def header_problem(header, data_bytes: int | None) -> str | None:
    """What is wrong with a parsed header, or None: every entry a known dtype, a shape of counts, and offsets
    that hold exactly shape x dtype; together they tile the data from 0, and, with `data_bytes`, end where the
    file ends."""
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        return "its __metadata__ is not a table of strings"
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        problem = _entry_problem(info)
        if problem:
            return f"tensor {name!r} {problem}"
        spans.append((*info["data_offsets"], name))
    end = 0
    for first, last, name in sorted(spans):
        if first != end:
            return f"tensor {name!r} starts at byte {first} of the data, not {end} (overlapping or gapped tensors)"
        end = last
    if data_bytes is not None and end != data_bytes:
        return (f"its tensors need {end} bytes after the header, the file holds {data_bytes}"
                + (" (cut short?)" if data_bytes < end else ""))
    return None


def _entry_problem(info) -> str | None:
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
        return "lacks dtype, shape or data_offsets"
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in DTYPES:
        return f"has dtype {dtype!r}, not one of {', '.join(DTYPES)}"
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
        return f"has shape {shape!r}, not a list of counts"
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(n) is int for n in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        return f"has data_offsets {offsets!r}, not [start, end]"
    needed = math.prod(shape) * DTYPES[dtype].itemsize
    if offsets[1] - offsets[0] != needed:
        return f"has {offsets[1] - offsets[0]} bytes, but shape {shape} of {dtype} needs {needed}"
    return None


def _safetensors(load: Callable[[], dict], where: str, remedy: str) -> dict[str, torch.Tensor]:
    """safetensors' own load of a file whose header passed: its error (the file changed meanwhile) is one line too."""
    try:
        return load()
    except SafetensorError as e:
        raise ParisError(f"{where} is damaged: {e}" + (f"; {remedy}" if remedy else "")) from None
