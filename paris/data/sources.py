"""Where images and captions come from: one interface, `open_source(cfg).samples(start)`, for every kind.

A source yields `Sample`s in a fixed order; a sample's position in that order is its identity, so
shard i of the store always holds positions [i * shard_size, (i+1) * shard_size) and many machines can
encode disjoint shard ranges. A source never decodes images: broken ones are found (and counted) later.

  folder      DIR of images; captions in a .txt beside each image, or one DIR/captions.jsonl / captions.csv
              with a `file` column and `data.caption_column`
  webdataset  tar shards as img2dataset writes them (jpg/png/webp + txt + json), any fsspec URL,
              braces for ranges: s3://bucket/laion/{00000..00999}.tar
  hf          a Hugging Face `datasets` data set saved with save_to_disk, or parquet file(s)
  fashion-mnist  the embedded demo data set
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import tarfile
from dataclasses import dataclass
from typing import Iterator

import fsspec

from paris.config import DataConfig
from paris.data import fashion_captions, fashion_mnist
from paris.errors import ParisError

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")


@dataclass
class Sample:
    key: str  # the source's name for it (file name, tar key, row number)
    image: object  # encoded bytes, a PIL image, or (fashion-mnist) a ready tensor [C,H,W] in [-1,1]
    caption: str | None  # None when the source has no caption for it (the sample is skipped)
    label: int = -1
    problem: str | None = None  # why its text or metadata is unusable (bad_caption, bad_metadata): skipped, counted


class Source:
    """What every source knows about its data set beyond the samples; the defaults are those of web data."""

    class_names: list[str] | None = None  # names of the label values, when the labels are classes
    has_held_out_split = False  # a test split the training never sees, so evaluation needs no --reference

    @staticmethod
    def image_shape(cfg: DataConfig) -> tuple[int, int, int]:
        """[C, H, W] of a preprocessed image."""
        return (3, cfg.image_size, cfg.image_size)

    @staticmethod
    def prompt(sample: Sample) -> str:
        """The prompt that asks for an image like `sample` when evaluating: its caption."""
        return sample.caption


class FashionMnistSource(Source):
    class_names = fashion_mnist.CLASSES
    has_held_out_split = True

    @staticmethod
    def image_shape(cfg: DataConfig) -> tuple[int, int, int]:
        return (1, 32, 32)  # 28x28 padded, whatever data.image_size says

    def prompt(self, sample: Sample) -> str:
        """Its class, as the demo asks for it; with described captions, what the image shows, in a phrasing
        held out of training."""
        if self.described:
            return fashion_captions.describe(sample.image, sample.label, self.seed, held_out=True)
        return fashion_mnist.class_prompt(sample.label)

    def __init__(self, cfg: DataConfig):
        self.images, self.labels = fashion_mnist.load(cfg.path, cfg.split, cfg.limit, cfg.classes)
        self.size = len(self.images)  # sources that know their length get an ETA
        self.described, self.seed = cfg.captions == "described", cfg.seed

    def samples(self, start: int = 0) -> Iterator[Sample]:
        for i in range(start, len(self.images)):
            label = int(self.labels[i])
            caption = (fashion_captions.describe(self.images[i], label, self.seed) if self.described
                       else fashion_mnist.caption(label, i))
            yield Sample(str(i), self.images[i], caption, label)


class FolderSource(Source):
    def __init__(self, cfg: DataConfig):
        self.fs, self.root = filesystem(cfg.path.rstrip("/"))
        if not self.fs.isdir(self.root):
            raise ParisError(f"image folder {cfg.path} not found; set data.path to a directory of images")
        files = sorted(p for p in self.fs.find(self.root) if p.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS)
        if not files:
            raise ParisError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {cfg.path}")
        self.files = files[: cfg.limit] if cfg.limit else files
        self.size = len(self.files)
        self.captions, self.labels = self._caption_table(cfg)

    def _caption_table(self, cfg: DataConfig) -> tuple[dict | None, dict]:
        """file name -> caption (and label) from captions.jsonl/.csv; None: read the .txt beside each image."""
        rows = None
        if self.fs.exists(f"{self.root}/captions.jsonl"):
            with self.fs.open(f"{self.root}/captions.jsonl", "rb") as f:
                rows = [row for row in map(_json_row, f) if row is not None]  # a broken line: its image has no caption
        elif self.fs.exists(f"{self.root}/captions.csv"):
            with self.fs.open(f"{self.root}/captions.csv", "r") as f:
                rows = list(csv.DictReader(f))
        if rows is None:
            return None, {}
        if rows and ("file" not in rows[0] or cfg.caption_column not in rows[0]):
            raise ParisError(f"the captions file in {cfg.path} needs columns `file` and `{cfg.caption_column}` "
                             f"(data.caption_column); it has {', '.join(rows[0])}")
        labels = {r["file"]: _label(r.get(cfg.label_column)) for r in rows} if cfg.label_column else {}
        return {r["file"]: r[cfg.caption_column] for r in rows if isinstance(r.get(cfg.caption_column), str)}, labels

    def samples(self, start: int = 0) -> Iterator[Sample]:
        for path in self.files[start:]:
            name = path[len(self.root) + 1 :]
            caption, problem = self._caption(path, name)
            yield Sample(name, self.fs.cat_file(path), caption, self.labels.get(name, -1), problem)

    def _caption(self, path: str, name: str) -> tuple[str | None, str | None]:
        """(caption, problem) of an image: from the captions file, or from the .txt beside it."""
        if self.captions is not None:
            return self.captions.get(name), None
        txt = path.rsplit(".", 1)[0] + ".txt"
        return _text(self.fs.cat_file(txt)) if self.fs.exists(txt) else (None, None)


class WebDatasetSource(Source):
    def __init__(self, cfg: DataConfig):
        from webdataset.tariterators import braceexpand

        self.urls = list(braceexpand.braceexpand(cfg.path))
        self.cfg = cfg
        self.size = None  # unknown until read through
        self.broken: dict[str, int] = {}  # truncated tar -> the source position where its samples ended

    def samples(self, start: int = 0) -> Iterator[Sample]:
        stream = self._stream(start)
        return itertools.islice(stream, max(0, self.cfg.limit - start)) if self.cfg.limit else stream

    def _stream(self, start: int) -> Iterator[Sample]:
        """Samples from position `start` on. A tar wholly before `start` whose size img2dataset recorded (in
        NNNNN_stats.json, written after the tar is complete) is skipped unread; others are read through."""
        position = 0
        for url in self.urls:
            known = self._recorded_count(url)
            if known is not None and position + known <= start:
                position += known
                continue
            count, whole = yield from _drop(self._tar(url), max(0, start - position))
            if whole and known is not None and count != known:
                raise ParisError(f"{url} holds {count} samples but its _stats.json says {known}; delete the stats "
                                 f"file (the tar is then counted by reading it) and prepare again")
            position += count
            if not whole:
                self.broken[url] = position

    @staticmethod
    def _recorded_count(url: str) -> int | None:
        if not url.endswith(".tar"):
            return None
        fs, path = filesystem(url[: -len(".tar")] + "_stats.json")
        if not fs.exists(path):
            return None
        with fs.open(path, "r") as f:
            return int(json.load(f)["successes"])

    def _tar(self, url: str):
        """Yields the samples of one tar; returns (how many, whether the tar was whole)."""
        from webdataset.tariterators import group_by_keys

        fs, path = filesystem(url)
        if not fs.exists(path):
            raise ParisError(f"webdataset shard {url} not found; check data.path ({self.cfg.path})")
        end, count = 0, 0

        def files():
            nonlocal end
            with fs.open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
                for info in tar:
                    if info.isfile():
                        yield {"fname": info.name, "data": tar.extractfile(info).read(), "__url__": url}
                        end = info.offset_data + info.size
        try:
            for record in group_by_keys(files()):
                yield self._sample(record)
                count += 1
            # A whole tar ends with two zero blocks after its last member; img2dataset killed mid-write leaves none.
            whole = fs.size(path) >= -(-end // 512) * 512 + 1024
        except (tarfile.TarError, EOFError, OSError):
            whole = False
        if not whole:
            log.warning("webdataset shard %s is truncated or corrupt; %d samples read from it", url, count)
        return count, whole

    def _sample(self, record: dict) -> Sample:
        image = next((record[ext] for ext in IMAGE_EXTENSIONS if ext in record), None)
        caption, problem = _text(record["txt"]) if "txt" in record else (None, None)
        meta = _json_row(record["json"]) if "json" in record else {}
        if meta is None:
            return Sample(record["__key__"], image, caption, -1, problem or "bad_metadata")
        if caption is None and isinstance(meta.get(self.cfg.caption_column), str):
            caption = meta[self.cfg.caption_column]
        return Sample(record["__key__"], image, caption, _label(meta.get(self.cfg.label_column)), problem)

class HuggingFaceSource(Source):
    def __init__(self, cfg: DataConfig):
        import datasets

        datasets.disable_progress_bars()
        try:
            if cfg.path.endswith(".parquet") or "*" in cfg.path:
                data = datasets.Dataset.from_parquet(cfg.path)
            else:
                data = datasets.load_from_disk(cfg.path)
        except (FileNotFoundError, ValueError) as e:
            raise ParisError(f"cannot read a Hugging Face data set at {cfg.path} ({str(e).splitlines()[0]}); "
                             f"give a directory written by save_to_disk or parquet file(s)") from None
        if isinstance(data, datasets.DatasetDict):
            if cfg.split not in data:
                raise ParisError(f"data set {cfg.path} has no split {cfg.split!r}; choose one of {', '.join(data)}")
            data = data[cfg.split]
        for column in (cfg.image_column, cfg.caption_column, *([cfg.label_column] if cfg.label_column else [])):
            if column not in data.column_names:
                raise ParisError(f"data set {cfg.path} has no column {column!r}; its columns: "
                                 f"{', '.join(data.column_names)} (set data.image_column / caption_column / label_column)")
        if isinstance(data.features[cfg.image_column], datasets.Image):
            data = data.cast_column(cfg.image_column, datasets.Image(decode=False))  # decode later, skip broken
        self.data = data.select(range(min(cfg.limit, len(data)))) if cfg.limit else data
        self.size = len(self.data)
        self.cfg = cfg

    def samples(self, start: int = 0) -> Iterator[Sample]:
        c = self.cfg
        for i in range(start, len(self.data)):
            row = self.data[i]
            image = row[c.image_column]
            if isinstance(image, dict):  # the datasets Image feature, undecoded: {"bytes", "path"}
                image = image["bytes"] if image.get("bytes") else _read(image.get("path"))
            label = int(row[c.label_column]) if c.label_column else -1
            yield Sample(str(i), image, row[c.caption_column], label)


def _text(raw: bytes) -> tuple[str | None, str | None]:
    """(caption, problem) from a caption file's bytes: UTF-8, or a problem to count."""
    try:
        return raw.decode("utf-8").strip(), None
    except UnicodeDecodeError:
        return None, "bad_caption"


def _json_row(raw: bytes) -> dict | None:
    """One JSON object (a captions.jsonl line, a webdataset .json); None when it is not one."""
    if not raw.strip():
        return None
    try:
        row = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return row if isinstance(row, dict) else None


def _label(value) -> int:
    """An integer label, or -1 when there is none or it is not an integer."""
    try:
        return int(value) if value is not None else -1
    except (TypeError, ValueError):
        return -1


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with fsspec.open(path, "rb") as f:
        return f.read()


def _drop(generator, n: int):
    """Yield from `generator` after dropping its first n items; return what it returns."""
    for i in itertools.count():
        try:
            item = next(generator)
        except StopIteration as stop:
            return stop.value
        if i >= n:
            yield item


def filesystem(url: str):
    """The fsspec filesystem of a URL; a protocol whose package is missing (s3fs, gcsfs) is a clear error."""
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as e:
        raise ParisError(f"cannot open {url}: {e}") from None


SOURCES = {"fashion-mnist": FashionMnistSource, "folder": FolderSource, "webdataset": WebDatasetSource,
           "hf": HuggingFaceSource}


def open_source(cfg: DataConfig):
    if cfg.source not in SOURCES:
        raise ParisError(f"unknown data source {cfg.source!r}; choose one of {', '.join(SOURCES)}")
    return SOURCES[cfg.source](cfg)
