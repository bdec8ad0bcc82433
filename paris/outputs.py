"""What a command writes for a user from its inputs (a pipeline folder from a release, an image from a run): never
over or inside what it reads, whole or not at all, and a write that fails (a full disk, no permission) is one line.

A single file goes through RunDir.write_bytes (a temporary name, renamed when complete); a folder written by
several libraries (transformers' and diffusers' save_pretrained) is written under a temporary name beside it and
renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

from paris.errors import ParisError

FOLDER_MARKERS = ("config.json", "model_index.json")  # a folder holding both is a pipeline folder paris may replace


def check_apart(output: str, inputs: list[str], what: str) -> None:
    """Refuse an `output` that is one of `inputs`, lies inside one, or holds one: writing it would rewrite, or
    mix itself into, what the command reads. Paths are compared resolved (links followed); URLs as written."""
    out = _comparable(output)
    for given in inputs:
        source = _comparable(given)
        if out == source or source in out.parents or out in source.parents:
            relation = "is" if out == source else "is inside" if source in out.parents else "holds"
            raise ParisError(f"{what} {output} {relation} the input {given}, which would be rewritten while it is "
                             "read; choose an output outside it")


@contextlib.contextmanager
def folder_written_whole(path: str):
    """A fresh local folder to write into, that becomes `path` when the block completes and is removed if it fails:
    nothing half-written is ever at `path`. An existing `path` is replaced only when empty or a pipeline folder."""
    final = Path(path)
    if final.exists() and not _replaceable(final):
        raise ParisError(f"{path} exists and is not a pipeline folder; give a new folder, or empty it first")
    temporary = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        temporary.mkdir(parents=True)
        yield str(temporary)
        _swap_in(temporary, final)
    except OSError as e:
        raise ParisError(f"cannot write {path}: {e.strerror or e}; free space on its disk or choose another "
                         "folder") from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _swap_in(temporary: Path, final: Path) -> None:
    """Move the complete `temporary` to `final`, the folder it replaces (if any) aside first, then deleted."""
    old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
    if final.exists():
        final.rename(old)
    temporary.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _replaceable(folder: Path) -> bool:
    return folder.is_dir() and (not any(folder.iterdir()) or all((folder / m).is_file() for m in FOLDER_MARKERS))


def _comparable(path: str) -> Path:
    if "://" in path:
        return Path("/" + path.replace("://", "/", 1).rstrip("/"))  # scheme as a root: apart from every local path
    return Path(os.path.realpath(os.path.expanduser(path)))
