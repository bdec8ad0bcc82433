"""One shard's samples -> its stored columns: decode and preprocess each image, skip (and count) the
broken ones, and run the three encoders batch by batch (latents, clustering features, text)."""

from __future__ import annotations

import itertools
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import torch

from paris.models.encoders import build_autoencoder, build_features
from paris.data.preprocess import Skip, load_image
from paris.errors import ParisError


class ShardEncoder:
    """Images and captions of one shard -> its columns, in batches of data.batch_size."""

    def __init__(self, cfg, source, text, device: str = "cpu"):
        self.cfg, self.source, self.text = cfg, source, text
        self.autoencoder = build_autoencoder(cfg.autoencoder, cfg.autoencoder_path, cfg.latent_scale, device)
        self.features = build_features(cfg, self._first_images, text, device)
        # What the stored features are a function of beyond the config: a learned extractor's weights.
        self.feature_identity = getattr(self.features, "identity", None)

    def _first_images(self, n: int, shrink=None) -> torch.Tensor:
        """The first n usable images of the source, each passed through `shrink` ([C,H,W] -> smaller) as soon as it
        is read when given, so a large fit set of large images never sits in memory at full size."""
        shrink = shrink or (lambda image: image)
        loaded = [image if isinstance(image, Skip) else shrink(image)
                  for image in map(self._load, itertools.islice(self.source.samples(0), n))]
        images = [image for image in loaded if not isinstance(image, Skip)]
        if not images:
            reasons = Counter(str(reason) for reason in loaded)
            raise ParisError(f"none of the first {len(loaded)} samples of {self.cfg.path} is usable ("
                             + ", ".join(f"{why} {count}" for why, count in sorted(reasons.items()))
                             + "); check data.path, the captions and data.min_image_size")
        return torch.stack(images)

    def _load(self, sample):
        """The preprocessed image of a sample, or the Skip that says why it has none."""
        if sample.problem:
            return Skip(sample.problem)
        if sample.caption is None:
            return Skip("no_caption")
        try:
            return load_image(sample.image, self.cfg.image_size, self.cfg.min_image_size)
        except Skip as reason:
            return reason

    def shard(self, samples: list, first: int, stamp: str) -> tuple[dict, dict]:
        """One batch of positions at a time (a shard of 256px images would not fit in memory at once),
        decoded by a pool of threads (PIL releases the GIL), in order."""
        skipped, kept, columns = Counter(), [], {}
        with ThreadPoolExecutor(max(1, self.cfg.decode_threads)) as pool:
            for i in range(0, len(samples), self.cfg.batch_size):
                chunk = samples[i : i + self.cfg.batch_size]
                loaded = list(pool.map(self._load, chunk))
                skipped.update(str(x) for x in loaded if isinstance(x, Skip))
                good = [(sample, x) for sample, x in zip(chunk, loaded) if not isinstance(x, Skip)]
                if not good:
                    continue
                encoded = self._encode(torch.stack([x for _, x in good]), [sample.caption for sample, _ in good])
                for key, value in encoded.items():
                    columns.setdefault(key, []).append(value)
                kept.extend(sample for sample, _ in good)
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
        return self.source.image_shape(self.cfg)

    def _encode(self, images: torch.Tensor, captions: list[str]) -> dict[str, torch.Tensor]:
        ids, mask = self.text.tokenize(captions)
        out = {"latents": self.autoencoder.encode(images).half(), "features": self.features(images, captions).half(),
               "text_mask": mask}
        if self.cfg.text_storage == "tokens":
            out["text_ids"] = ids
        else:
            out["text_states"] = self.text.encode_tokens(ids, mask).half()
        return out
