"""The README's screenshots of the serve page come from a script (benchmarks/screenshots.py): it still runs."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from testkit.serve import CHROMIUM

pytestmark = [pytest.mark.slow,  # a server process and a browser
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (`make browser`)")]


def test_the_screenshot_script_draws_the_page_at_desktop_and_phone_widths(three_experts, tmp_path):
    from benchmarks.screenshots import SHOTS, take

    written = take(three_experts, tmp_path, prompts=["a photo of a bag", "a photo of a coat"], steps=2)
    assert [path.name for path in written] == list(SHOTS)
    for path in written:
        assert Image.open(path).size == SHOTS[path.name]
