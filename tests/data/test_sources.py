"""Every source kind through `prepare`, and what happens to broken samples: skipped, counted, never fatal."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from testkit.tiny_encoders import IMAGE_SIZE, caption, image_bytes, laion_config, write_folder, write_tar
from paris.config import DataConfig
from paris.data.prepare import prepare
from paris.data.preprocess import Skip, load_image
from paris.data.sources import open_source
from paris.data.store import load_store
from testkit.runs import read_all
from paris.errors import ParisError
from paris.run import RunDir


def _prepare(tmp_path, models, source: str, path: str, **data):
    run = RunDir(str(tmp_path / "run"))
    return prepare(run, laion_config(models, source, path, **data)), read_all(load_store(run))


# --- preprocessing -------------------------------------------------------------------------------

def test_resize_shorter_side_then_centre_crop():
    image = Image.new("RGB", (300, 100), "black")
    image.paste((255, 255, 255), (120, 0, 180, 100))  # a white band in the middle
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    x = load_image(buffer.getvalue(), 50, 10)  # 300x100 -> 150x50 -> crop columns 50..100: band at 10..40
    assert x.shape == (3, 50, 50) and x.min() >= -1 and x.max() <= 1
    assert torch.allclose(x[:, :, 12:38], torch.ones(3, 50, 26), atol=1e-2)
    assert x[:, :, :8].max() < -0.9 and x[:, :, -8:].max() < -0.9


def test_grey_and_transparent_images_become_rgb():
    buffer = io.BytesIO()
    Image.new("RGBA", (40, 40), (0, 0, 0, 0)).save(buffer, format="PNG")  # fully transparent
    assert torch.allclose(load_image(buffer.getvalue(), 32, 32), torch.ones(3, 32, 32))  # on white
    grey = io.BytesIO()
    Image.new("L", (40, 40), 0).save(grey, format="PNG")
    assert torch.equal(load_image(grey.getvalue(), 32, 32), -torch.ones(3, 32, 32))


@pytest.mark.parametrize("data,reason", [(b"not an image", "corrupt"), (image_bytes(0)[:200], "corrupt"),
                                         (image_bytes(0, size=(20, 90)), "too_small"), (None, "no_image")])
def test_broken_images_are_skipped_with_a_reason(data, reason):
    with pytest.raises(Skip, match=reason):
        load_image(data, 64, 32)


# --- sources -------------------------------------------------------------------------------------

@pytest.mark.parametrize("captions", ["txt", "jsonl", "csv"])
def test_folder_source(tmp_path, models, captions):
    folder = write_folder(tmp_path / "images", 5, captions)
    label = "label" if captions != "txt" else ""
    manifest, store = _prepare(tmp_path, models, "folder", str(folder), label_column=label)
    assert manifest["count"] == 5 and store.captions == [caption(i) for i in range(5)]
    assert store.latents.shape == (5, 4, IMAGE_SIZE // 8, IMAGE_SIZE // 8)
    assert store.labels.tolist() == ([0, 1, 2, 0, 1] if label else [-1] * 5)


def test_folder_skips_and_counts_broken_images_and_missing_captions(tmp_path, models):
    folder = write_folder(tmp_path / "images", 6)
    (folder / "0001.jpg").write_bytes(b"garbage")
    (folder / "0002.jpg").write_bytes(image_bytes(2)[:300])  # truncated download
    (folder / "0003.jpg").write_bytes(image_bytes(3, size=(16, 16)))
    (folder / "0004.txt").unlink()
    manifest, store = _prepare(tmp_path, models, "folder", str(folder))
    assert manifest["skipped"] == {"corrupt": 2, "too_small": 1, "no_caption": 1}
    assert manifest["count"] == 2 and store.captions == [caption(0), caption(5)]


def test_no_captions_at_all_is_one_clear_error(tmp_path, models):
    folder = write_folder(tmp_path / "images", 3, captions="none")
    with pytest.raises(ParisError, match="no_caption 3.*data.caption_column"):
        _prepare(tmp_path, models, "folder", str(folder))
    assert not (tmp_path / "run" / "data" / "manifest.json").exists()


def test_captions_file_with_the_wrong_column(tmp_path, models):
    folder = write_folder(tmp_path / "images", 2, "jsonl")
    with pytest.raises(ParisError, match="`file` and `caption`.*it has file, text, label"):
        _prepare(tmp_path, models, "folder", str(folder), caption_column="caption")


def test_webdataset_source_with_braces_and_a_truncated_tar(tmp_path, models):
    for i in range(3):
        write_tar(tmp_path / "tars" / f"{i:05d}.tar", 4 * i, 4, truncate=(i == 1))
    manifest, store = _prepare(tmp_path, models, "webdataset", f"file://{tmp_path}/tars/{{00000..00002}}.tar",
                               label_column="label")
    kept = [int(c.split()[2]) for c in store.captions]
    assert kept[:4] == [0, 1, 2, 3] and kept[-4:] == [8, 9, 10, 11]  # tars 0 and 2 whole
    assert 4 + 4 <= len(kept) < 12 and manifest["skipped"]["truncated_tar"] == 1
    assert store.labels.tolist() == [k % 3 for k in kept]


def test_webdataset_range_skips_tars_whose_size_img2dataset_recorded(tmp_path, models):
    for i in range(3):
        write_tar(tmp_path / "tars" / f"{i:05d}.tar", 4 * i, 4, stats=True)
    url = f"{tmp_path}/tars/{{00000..00002}}.tar"
    manifest, _ = _prepare(tmp_path, models, "webdataset", url)
    for i in range(2):  # a range starting at shard 2 (= tar 2) must not even open tars 0 and 1
        (tmp_path / "tars" / f"{i:05d}.tar").write_bytes(b"unreadable")
    run = RunDir(str(tmp_path / "range"))
    part = prepare(run, laion_config(models, "webdataset", url), (2, None))
    assert [e["count"] for e in part["shards"]] == [4] and part["shards"][0]["skipped"] == {}
    assert part["shards"][0]["sha256"] == manifest["shards"][2]["sha256"]  # the same positions 8..11
    write_tar(tmp_path / "tars" / "00002.tar", 8, 3)  # now 3 samples, but its stats still say 4
    with pytest.raises(ParisError, match="00002.tar holds 3 samples but its _stats.json says 4"):
        prepare(RunDir(str(tmp_path / "other")), laion_config(models, "webdataset", url), (2, None))


def test_webdataset_missing_shard(tmp_path, models):
    with pytest.raises(ParisError, match="webdataset shard .*nothing.tar not found"):
        _prepare(tmp_path, models, "webdataset", str(tmp_path / "nothing.tar"))


@pytest.mark.parametrize("layout", ["save_to_disk", "parquet"])
def test_huggingface_source(tmp_path, models, layout):
    import datasets

    rows = {"picture": [{"bytes": image_bytes(i), "path": None} for i in range(5)],
            "caption": [caption(i) for i in range(5)], "label": [7, 8, 9, 7, 8]}
    features = datasets.Features({"picture": datasets.Image(), "caption": datasets.Value("string"),
                                  "label": datasets.Value("int64")})
    data = datasets.Dataset.from_dict(rows, features=features)
    rows["picture"][1] = {"bytes": b"broken", "path": None}
    data = datasets.Dataset.from_dict(rows, features=datasets.Features({**features, "picture": datasets.Image(decode=False)}))
    if layout == "parquet":
        path = str(tmp_path / "data.parquet")
        data.to_parquet(path)
    else:
        path = str(tmp_path / "hf")
        datasets.DatasetDict({"train": data}).save_to_disk(path)
    manifest, store = _prepare(tmp_path, models, "hf", path, image_column="picture", caption_column="caption",
                               label_column="label")
    assert manifest["count"] == 4 and manifest["skipped"] == {"corrupt": 1}
    assert store.captions == [caption(i) for i in (0, 2, 3, 4)] and store.labels.tolist() == [7, 9, 7, 8]


def test_huggingface_source_names_a_missing_column(tmp_path):
    import datasets

    path = str(tmp_path / "hf")
    datasets.Dataset.from_dict({"img": [b"x"], "text": ["a"]}).save_to_disk(path)
    with pytest.raises(ParisError, match="no column 'image'.*img, text"):
        open_source(DataConfig(source="hf", path=path))


def test_unknown_source_and_missing_folder(tmp_path):
    with pytest.raises(ParisError, match="unknown data source 'laion'; choose one of fashion-mnist, folder"):
        open_source(DataConfig(source="laion"))
    with pytest.raises(ParisError, match="image folder .* not found"):
        open_source(DataConfig(source="folder", path=str(tmp_path / "none")))


def test_malformed_text_and_metadata_are_skipped_and_counted_never_fatal(tmp_path, models):
    import tarfile

    folder = write_folder(tmp_path / "txt", 4)
    (folder / "0001.txt").write_bytes(b"\xff\xfe not utf-8 \x80")
    manifest, store = _prepare(tmp_path / "a", models, "folder", str(folder))
    assert manifest["skipped"] == {"bad_caption": 1} and store.captions == [caption(i) for i in (0, 2, 3)]

    folder = write_folder(tmp_path / "jsonl", 4, "jsonl")
    lines = (folder / "captions.jsonl").read_text().splitlines()
    lines[1] = '{"file": "0001.jpg", "text": '  # cut short
    lines[2] = lines[2].replace('"label": 2', '"label": "two"')
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
    manifest, store = _prepare(tmp_path / "b", models, "folder", str(folder), label_column="label")
    assert manifest["skipped"] == {"no_caption": 1} and store.labels.tolist() == [0, -1, 0]

    tar_path = tmp_path / "tars" / "00000.tar"
    tar_path.parent.mkdir()
    with tarfile.open(tar_path, "w") as tar:
        for i, meta in enumerate([b'{"label": 1}', b'{"label": ', b'{"label": 0}']):
            for ext, data in (("jpg", image_bytes(i)), ("txt", caption(i).encode()), ("json", meta)):
                info = tarfile.TarInfo(f"{i:09d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    manifest, store = _prepare(tmp_path / "c", models, "webdataset", str(tar_path), label_column="label")
    assert manifest["skipped"] == {"bad_metadata": 1} and store.captions == [caption(0), caption(2)]
