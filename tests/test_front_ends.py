"""One config, one integrator: Python, `paris generate`, the server, `paris evaluate`'s sampler and diffusers draw
the same pixels for the same settings."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from testkit.runs import run_in_process

from paris.evaluate.table import Measures, sample_and_score
from paris.images import to_pil
from paris.inference.pipeline import ParisPipeline
from paris.serve.engine import Engine

PROMPT = "a photo of a bag"
SAVED = {"strategy": "top2", "guidance": 3.0, "sampler": "heun", "shift": 2.0, "seed": 4}  # not the defaults
STEPS = 3  # given at each call, as a user would


def test_every_front_end_draws_the_same_pixels(three_experts, tmp_path):
    """A folder saved with its own sampling settings: every front end samples with them."""
    from diffusers import DiffusionPipeline

    saved = ParisPipeline.from_pretrained(str(three_experts))
    saved.sample = saved.sample.updated(**SAVED)
    saved.save_pretrained(str(tmp_path / "folder"))
    folder = str(tmp_path / "folder")
    pipe = ParisPipeline.from_pretrained(folder)
    python = np.asarray(pipe([PROMPT], steps=STEPS)[0])
    assert python.std() > 10  # not a flat image: the comparisons below mean something

    out = tmp_path / "cli.png"
    result = run_in_process("generate", folder, "-p", PROMPT, "--steps", str(STEPS), "--out", str(out))
    assert result.returncode == 0, result.stderr
    cli = np.asarray(Image.open(out))[::4, ::4, 0]  # one prompt: no label margin; drawn at 4x, grayscale as RGB

    job = Engine(pipe).submit(PROMPT, steps=STEPS)
    server = np.asarray(Image.open(io.BytesIO(job.finished.result(timeout=120).images[0])))

    sample = pipe.sample.updated(steps=STEPS)
    row = sample_and_score(pipe, sample.strategy, [PROMPT], None, sample, sample.seed, 1, Measures(), keep_images=True)
    evaluate = np.asarray(to_pil(row["images"][0]))

    diffusers_pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    diffusers = np.asarray(diffusers_pipe(PROMPT, num_inference_steps=STEPS).images[0])

    for name, image in {"cli": cli, "server": server, "evaluate": evaluate}.items():
        assert np.array_equal(image, python), name
    # diffusers integrates with its own schedulers: equal within 1e-5, so a pixel may round the other way
    assert np.abs(diffusers.astype(int) - python).max() <= 1
