"""`paris evaluate` shows how its sampling goes: a bar over the images, and under it one over each batch's steps."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest

from paris import progress
from paris.evaluate.table import Measures, sample_and_score
from paris.inference.pipeline import ParisPipeline


class Recorder:
    """A listener that keeps every bar's name, total and positions."""

    def __init__(self):
        self.bars: list[tuple[str, int | None, list[int]]] = []

    def say(self, message: str, warning: bool) -> None:
        pass

    @contextlib.contextmanager
    def bar(self, name: str, total: int | None, completed: int, unit: str):
        positions = [completed]
        self.bars.append((name, total, positions))

        class Bar:
            def update(self, completed: int | None = None, advance: int = 0, **fields) -> None:
                positions.append((positions[-1] if completed is None else completed) + advance)

        yield Bar()


@pytest.mark.slow  # loads a pipeline and samples: a few seconds
def test_sampling_shows_a_bar_per_batch_of_images_and_per_step(three_experts):
    pipe = ParisPipeline.from_pretrained(str(three_experts))
    sample = dataclasses.replace(pipe.sample, steps=3)
    recorder = Recorder()
    progress.listen(recorder)
    try:
        sample_and_score(pipe, "top2", ["a bag", "a coat", "a shirt"], None, sample, 0, 2, Measures())
    finally:
        progress.listen(None)
    assert recorder.bars == [("sample: top2", 3, [0, 2, 3]), ("batch 1/2", 3, [0, 1, 2, 3]),
                             ("batch 2/2", 3, [0, 1, 2, 3])]
