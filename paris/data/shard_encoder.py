"""One shard's samples -> its stored columns: decode and preprocess each image, skip (and count) the
broken ones, and run the three encoders batch by batch (latents, clustering features, text)."""

from __future__ import annotations

import itertools
from collections import Counter

import torch

from paris.data.encoders import build_autoencoder, build_features
from paris.data.preprocess import Skip, load_image


class ShardEncoder:
    """Images and captions of one shard -> its columns, in batches of data.batch_size."""

    def __init__(self, cfg, source, text):
        self.cfg, self.source, self.text = cfg, source, text
        self.autoencoder = build_autoencoder(cfg.autoencoder, cfg.autoencoder_path, cfg.latent_scale)
        self.features = build_features(cfg, lambda: self._first_images(cfg.pca_fit_images))

    def _first_images(self, n: int) -> torch.Tensor:
        images = (self._image(s) for s in itertools.islice(self.source.samples(0), n))
        return torch.stack([image for image in images if image is not None])

    def _image(self, sample):
        try:
            return load_image(sample.image, self.cfg.image_size, self.cfg.min_image_size)
        except Skip:
            return None

    def shard(self, samples: list, first: int, stamp: str) -> tuple[dict, dict]:
        """Decode and encode one batch at a time: a shard of 256px images would not fit in memory at once."""
        skipped, kept, batch, columns = Counter(), [], [], {}

        def encode_batch():
            encoded = self._encode(torch.stack([image for _, image in batch]), [s.caption for s, _ in batch])
            for key, value in encoded.items():
                columns.setdefault(key, []).append(value)
            kept.extend(sample for sample, _ in batch)
            batch.clear()

        for sample in samples:
            try:
                if sample.caption is None:
                    raise Skip("no_caption")
                batch.append((sample, load_image(sample.image, self.cfg.image_size, self.cfg.min_image_size)))
            except Skip as reason:
                skipped[str(reason)] += 1
            if len(batch) == self.cfg.batch_size:
                encode_batch()
        if batch:
            encode_batch()
        if not kept:  # an empty shard still needs columns of the right shapes: encode a blank image, keep none
            blank = self._encode(torch.zeros(1, *self._image_shape()), [""])
            columns = {key: [value[:0]] for key, value in blank.items()}
        # A truncated tar counts in the shard where its samples ended, wherever (and by whom) it was read.
        broken = [p for p in getattr(self.source, "broken", {}).values() if first <= p < first + self.cfg.shard_size]
        if broken:
            skipped["truncated_tar"] = len(broken)
        tensors = {key: torch.cat(values) for key, values in columns.items()}
        tensors["labels"] = torch.tensor([s.label for s in kept], dtype=torch.int64)
        meta = {"captions": [s.caption for s in kept], "keys": [s.key for s in kept], "skipped": dict(skipped),
                "fingerprint": stamp, "positions": len(samples)}
        return tensors, meta

    def _image_shape(self) -> tuple:
        return (1, 32, 32) if self.cfg.source == "fashion-mnist" else (3, self.cfg.image_size, self.cfg.image_size)

    def _encode(self, images: torch.Tensor, captions: list[str]) -> dict[str, torch.Tensor]:
        ids, mask = self.text.tokenize(captions)
        out = {"latents": self.autoencoder.encode(images).half(), "features": self.features(images).half(),
               "text_mask": mask}
        if self.cfg.text_storage == "tokens":
            out["text_ids"] = ids
        else:
            out["text_states"] = self.text.encode_tokens(ids, mask).half()
        return out
