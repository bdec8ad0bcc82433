"""Fashion-MNIST, the embedded data set: idx.gz files (Debian's `dataset-fashion-mnist`) -> images + captions."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from paris.errors import ParisError

CLASSES = ["T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
TEMPLATES = ["a photo of a {}", "a {}, product photo", "a black and white photo of a {}", "a picture of a {}"]
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MISSING = "install the Debian package `dataset-fashion-mnist` (apt-get install dataset-fashion-mnist) or pass --data DIR"


def class_prompt(label: int) -> str:
    """The prompt used to ask for one class at sampling time (the first template)."""
    return TEMPLATES[0].format(CLASSES[label])


def caption(label: int, index: int) -> str:
    """A caption for image `index` of class `label`; templates rotate so every class sees all of them."""
    return TEMPLATES[index % len(TEMPLATES)].format(CLASSES[label])


def load(root: str | Path, split: str = "train", limit: int | None = None,
         classes: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [N,1,32,32] float in [-1,1] (28x28 zero-padded, i.e. black, to 32x32) and labels [N] int64: the
    first `limit` of those of `classes` (None: all)."""
    if split not in FILES:
        raise ParisError(f"unknown Fashion-MNIST split {split!r}; choose train or test")
    image_file, label_file = (Path(root) / name for name in FILES[split])
    for f in (image_file, label_file):
        if not f.is_file():
            raise ParisError(f"Fashion-MNIST file {f} not found; {MISSING}")
    images = _read_idx(image_file, magic=2051)
    labels = _read_idx(label_file, magic=2049)
    if len(images) != len(labels):
        raise ParisError(f"{image_file} has {len(images)} images but {label_file} has {len(labels)} labels")
    if classes is not None:
        keep = np.isin(labels, classes)
        images, labels = images[keep], labels[keep]
    if limit:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.copy()).float().div(127.5).sub(1)[:, None]
    x = F.pad(x, (2, 2, 2, 2), value=-1.0)
    return x, torch.from_numpy(labels.astype(np.int64))


def _read_idx(path: Path, magic: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ParisError(f"cannot read {path} ({e}); reinstall it: {MISSING}") from None
    header = 16 if magic == 2051 else 8
    if len(data) < header:
        raise ParisError(f"{path} is truncated (a {len(data)}-byte file); {MISSING}")
    found, count = struct.unpack(">II", data[:8])
    if found != magic:
        raise ParisError(f"{path} is not an idx file of the expected kind (magic {found}, expected {magic})")
    dims = (count, *struct.unpack(">II", data[8:16])) if magic == 2051 else (count,)
    offset = 8 + 4 * (len(dims) - 1)
    body = np.frombuffer(data, dtype=np.uint8, offset=offset)
    if body.size != int(np.prod(dims)):
        raise ParisError(f"{path} is truncated ({body.size} bytes of {int(np.prod(dims))}); {MISSING}")
    return body.reshape(dims)
