"""`paris prepare` throughput with the tiny test encoders (AutoencoderKL, CLIPTextModel, Dinov2Model).

    PYTHONPATH=. .venv/bin/python benchmarks/prepare_speed.py [NUM_IMAGES]

A folder of JPEGs (320x256, captions in .txt files) prepared at Paris's 256x256, 77 CLIP tokens, DINOv2
CLS features. The encoders are tiny, so this measures the pipeline around them: reading, decoding,
resizing, batching, writing shards. Real encoders add their own (GPU) time on top. The encoders and images
are the tests' own, from testkit/tiny_encoders.py (PYTHONPATH=. makes it importable from the repository root).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from paris.data.prepare import prepare
from paris.run import RunDir
from testkit.tiny_encoders import caption, image_bytes, laion_config, tiny_models, with_data


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    root = Path(tempfile.mkdtemp(prefix="paris-prepare-bench-"))
    for i in range(n):
        (root / "images").mkdir(exist_ok=True)
        (root / "images" / f"{i:06d}.jpg").write_bytes(image_bytes(i, size=(320, 256)))
        (root / "images" / f"{i:06d}.txt").write_text(caption(i))
    config = laion_config(tiny_models(), "folder", str(root / "images"))
    config = with_data(config, image_size=256, min_image_size=128, shard_size=250, batch_size=64)
    tick = time.perf_counter()
    manifest = prepare(RunDir(str(root / "run")), config)
    seconds = time.perf_counter() - tick
    print(f"prepare: {manifest['count']} images in {seconds:.1f} s = {manifest['count'] / seconds:.0f} images/s "
          f"(256x256, tiny sd-vae + clip + dinov2, {len(manifest['shards'])} shards)")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
