"""What a data set holds, by content: the identity that tells the same images apart from the same path.

A data set's digest hashes what its source yields, sample by sample, in order: each image as read (its encoded
bytes, or the pixels of a source that yields them), its caption and its label, never its file name or path. So a
copy of a folder, a mirror of a bucket or a renamed file has the digest of the original, and prepare records it in
the manifest (`content`). It is taken shard by shard (`shard_size` source positions each), as prepare reads, so a
prepare split over machines records the same digest as one that was not.
"""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import torch

from paris.config import DataConfig


def samples_digest(samples: list) -> str:
    """The digest of a shard's source samples (paris.data.sources.Sample): images, captions and labels, in order."""
    h = hashlib.sha256()
    for sample in samples:
        h.update(_image_bytes(sample.image))
        h.update(f"\0{sample.caption}\0{sample.label}\0".encode())
    return h.hexdigest()


def combined(digests: list[str | None]) -> str | None:
    """A data set's digest from its shards' (None when one is unknown: a shard prepared by an older paris)."""
    if not digests or any(d is None for d in digests):
        return None
    return hashlib.sha256("".join(digests).encode()).hexdigest()[:16]


def source_digest(cfg: DataConfig) -> str:
    """The digest of the data set `cfg` describes, read through once (nothing decoded or encoded)."""
    from paris.data.sources import open_source

    stream, digests = open_source(cfg).samples(0), []
    while samples := list(itertools.islice(stream, cfg.shard_size)):
        digests.append(samples_digest(samples))
    return combined(digests)


def _image_bytes(image) -> bytes:
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, torch.Tensor):
        return image.contiguous().numpy().tobytes()
    return np.asarray(image).tobytes()  # a decoded image (PIL) from a source that yields them
