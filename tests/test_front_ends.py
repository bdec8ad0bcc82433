"""One config, one integrator: Python, `paris generate`, the server, `paris evaluate`'s sampler and diffusers draw
the same pixels for the same settings; and one check: Python, `paris generate` and the server refuse the same bad
settings and prompts with the same words."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from PIL import Image
from testkit.runs import run_in_process

from paris.errors import ParisError
from paris.evaluate.table import Measures, sample_and_score
from paris.images import to_pil
from paris.inference.pipeline import ParisPipeline
from paris.serve.engine import Engine

PROMPT = "a photo of a bag"
SAVED = {"strategy": "top2", "guidance": 3.0, "sampler": "heun", "shift": 2.0, "seed": 4}  # not the defaults
STEPS = 3  # given at each call, as a user would


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_every_front_end_draws_the_same_pixels(three_experts, tmp_path, quantize):
    """A folder saved with its own sampling settings: every front end samples with them, and with the experts
    quantised as each front end's own way of saying so asks (int8 here, torchao's deterministic kernels)."""
    from diffusers import DiffusionPipeline

    saved = ParisPipeline.from_pretrained(str(three_experts))
    saved.sample = saved.sample.updated(**SAVED)
    saved.save_pretrained(str(tmp_path / "folder"))
    folder = str(tmp_path / "folder")
    pipe = ParisPipeline.from_pretrained(folder, quantize=quantize)
    python = np.asarray(pipe([PROMPT], steps=STEPS)[0])
    assert python.std() > 10  # not a flat image: the comparisons below mean something
    if quantize != "none":  # nor is int8 the same image as fp32: a front end that left it out would differ
        assert not np.array_equal(python, np.asarray(ParisPipeline.from_pretrained(folder)([PROMPT], steps=STEPS)[0]))

    out = tmp_path / "cli.png"
    result = run_in_process("generate", folder, "-p", PROMPT, "--steps", str(STEPS), "--out", str(out),
                            "--quantize", quantize)
    assert result.returncode == 0, result.stderr
    assert f"MiB resident, {quantize})" in result.stdout
    cli = np.asarray(Image.open(out))[::4, ::4, 0]  # one prompt: no label margin; drawn at 4x, grayscale as RGB

    job = Engine(pipe).submit(PROMPT, steps=STEPS)  # the server's quantize is the pipeline's (paris serve --quantize)
    server = np.asarray(Image.open(io.BytesIO(job.finished.result(timeout=120).images[0])))

    sample = pipe.sample.updated(steps=STEPS)
    row = sample_and_score(pipe, sample.strategy, [PROMPT], None, sample, sample.seed, 1, Measures(), keep_images=True)
    evaluate = np.asarray(to_pil(row["images"][0]))

    diffusers_pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    diffusers = np.asarray(diffusers_pipe(PROMPT, num_inference_steps=STEPS, quantize=quantize).images[0])

    for name, image in {"cli": cli, "server": server, "evaluate": evaluate}.items():
        assert np.array_equal(image, python), name
    # diffusers integrates with its own schedulers: equal within 1e-5, so a pixel may round the other way
    assert np.abs(diffusers.astype(int) - python).max() <= 1


@pytest.mark.parametrize("setting, value, words", [
    ("guidance", float("inf"), "must be a finite number, got inf"),  # once drew non-finite images
    ("seed", 2**64, "must be in [-9223372036854775808, 18446744073709551615], got 18446744073709551616"),
    ("steps", 0, "must be at least 1, got 0"),
    ("quantize", "int4", "must be one of none, int8, int8-dynamic; got 'int4'"),
])
def test_every_front_end_refuses_a_bad_setting_with_the_same_words(three_experts, setting, value, words):
    pipe = ParisPipeline.from_pretrained(str(three_experts))
    with pytest.raises(ParisError, match=re.escape(words)):
        pipe.generate([PROMPT], **{"steps": 1, setting: value})
    with pytest.raises(ParisError, match=re.escape(words)):
        Engine(pipe).submit(PROMPT, **{"steps": 1, setting: value})
    result = run_in_process("generate", str(three_experts), "-p", PROMPT, f"--{setting}", str(value))
    assert result.returncode == 2 and words in result.stderr, result.stderr


@pytest.mark.parametrize("prompt, words", [
    (None, "prompt is missing"),
    (5, "prompt must be a string or a non-empty list of strings, got 5"),
    ({"text": PROMPT}, "prompt must be a string or a non-empty list of strings, got {'text'"),
    ([PROMPT, None], "the list holds None"),
    ([], "got []"),
])
def test_python_and_the_server_refuse_a_prompt_that_is_not_text_with_the_same_words(three_experts, prompt, words):
    pipe = ParisPipeline.from_pretrained(str(three_experts))
    for front_end in (pipe.generate, Engine(pipe).submit):
        with pytest.raises(ParisError, match=re.escape(words)):
            front_end(prompt, steps=1)


def test_python_takes_one_prompt_as_one_image_and_an_empty_one_as_the_unconditional_image(three_experts):
    pipe = ParisPipeline.from_pretrained(str(three_experts))
    one, _ = pipe.generate(PROMPT, steps=1)
    unconditional, _ = pipe.generate([""], steps=1)
    assert one.shape[0] == 1 and torch.equal(one, pipe.generate([PROMPT], steps=1)[0])  # not a prompt per letter
    assert unconditional.shape[0] == 1
    with pytest.raises(ParisError, match="prompt must be a non-empty string"):  # the server wants words
        Engine(pipe).submit("", steps=1)
