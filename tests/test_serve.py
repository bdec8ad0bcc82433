"""paris serve, driven as its users drive it: OpenAI's own client, plain HTTP, and a real browser."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from paris.inference.pipeline import ParisPipeline
from testkit.serve import CHROMIUM, app_client, launch_chromium, serving

KEY = "test-key"
pytestmark = pytest.mark.slow  # a server process


@pytest.fixture(scope="module")
def served(three_experts):
    with serving(three_experts, "--max-resident-experts", "2", "--log-level", "debug",
                 env={"PARIS_API_KEY": KEY}) as server:
        yield server


@pytest.fixture(scope="module")
def server(served):
    return served.url


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_openai_client_gets_paris_images(client, three_experts):
    response = client.images.generate(model="pipeline", prompt="a photo of a bag", n=2, size="8x8",
                                      response_format="b64_json", extra_body={"steps": 3, "seed": 7, "strategy": "top2"})
    images = [_pixels(base64.b64decode(item.b64_json)) for item in response.data]
    expected = ParisPipeline.from_pretrained(str(three_experts))(["a photo of a bag"] * 2, steps=3, seed=7,
                                                                  strategy="top2")
    assert len(images) == 2 and images[0].shape[:2] == (8, 8)
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(images, expected))


def test_url_responses_serve_the_png(client):
    response = client.images.generate(prompt="a coat", n=1, response_format="url", extra_body={"steps": 2})
    with urllib.request.urlopen(response.data[0].url) as image:  # no key needed: the URL is the capability
        assert _pixels(image.read()).shape[:2] == (8, 8)


@pytest.mark.parametrize("request_body, needle", [
    ({"prompt": "a bag", "extra_body": {"strategy": "bogus"}}, "unknown strategy 'bogus'; choose one of top1"),
    ({"prompt": "a bag", "n": 0}, "n must be an integer from 1"),
    ({"prompt": "a bag", "extra_body": {"steps": 100000}}, "steps must be at most 200"),
    ({"prompt": ""}, "prompt must be a non-empty string"),
    ({"prompt": "a bag", "size": "512x512"}, "size must be 8x8"),
    ({"prompt": "a bag", "extra_body": {"stpes": 3}}, "unknown field(s) stpes"),
])
def test_bad_requests_get_a_400_that_says_why_and_the_server_keeps_serving(client, request_body, needle):
    import openai

    with pytest.raises(openai.BadRequestError) as error:
        client.images.generate(**request_body)
    assert needle in error.value.body["message"], error.value.body
    assert len(client.images.generate(prompt="a bag", extra_body={"steps": 1}).data) == 1


def test_a_missing_key_is_refused_and_models_and_health_answer(server, client):
    import openai
    from openai import OpenAI

    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0).images.generate(prompt="a bag")
    assert [model.id for model in client.models.list()] == ["pipeline"]
    health = json.load(urllib.request.urlopen(f"{server}/healthz"))
    assert health["status"] == "ok" and health["auth"] is True


def test_the_server_logs_each_requests_progress_at_debug_level(served, client):
    response = client.images.generate(prompt="a shoe", extra_body={"steps": 3, "seed": 11})
    job = response.model_extra["paris"]["id"]
    log = served.log()
    assert f"job {job} queued: 1 image(s), " in log and f"job {job} done: " in log, log
    assert re.search(rf"batch \d+ \(jobs [^)]*{job}[^)]*\): step 3/3", log), log


def test_the_server_writes_a_line_per_request_and_no_prompt(served, client):
    client.images.generate(prompt="a secret sandal", n=2, extra_body={"steps": 2})
    with pytest.raises(Exception):
        client.images.generate(prompt="a secret sandal", extra_body={"steps": 0})
    log = served.log()
    assert re.search(r"paris.serve INFO: POST /v1/images/generations 200 [\d.]+ s 2 images\n", log), log
    assert re.search(r"paris.serve INFO: POST /v1/images/generations 400 [\d.]+ s 0 images\n", log), log
    assert "secret" not in log  # prompts are logged only with --log-prompts


def test_log_prompts_adds_them_to_the_line(three_experts, caplog):
    with app_client(three_experts, log_prompts=True, max_steps=2) as client, caplog.at_level("INFO", "paris.serve"):
        client.post("/api/jobs", json={"prompt": "a bag\na \"coat\"", "steps": 1})
    assert [r.getMessage() for r in caplog.records if r.name == "paris.serve"][-1].endswith(
        ' s 2 images prompts ["a bag", "a \\"coat\\""]')


def test_a_client_that_goes_away_cancels_its_job(served, server):
    """The server notices the closed connection while the job samples, and stops it between two steps."""
    host, port = server.removeprefix("http://").split(":")
    body = json.dumps({"prompt": "a long walk", "steps": 200, "seed": 5}).encode()
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: paris\r\nAuthorization: Bearer "
                           + KEY.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: "
                           + str(len(body)).encode() + b"\r\n\r\n" + body)
        _wait_for(served, r"200 steps, seed 5\b")  # queued
    cancelled = _wait_for(served, r"job \w+ cancelled at step (\d+) of 200")
    assert int(cancelled.group(1)) < 200 and re.search(r"POST /v1/images/generations 499 ", served.log())


def _wait_for(served, pattern: str, timeout: float = 60) -> re.Match:
    deadline = time.monotonic() + timeout
    while not (found := re.search(pattern, served.log())):
        assert time.monotonic() < deadline, f"no {pattern!r} in the log:\n{served.log()}"
        time.sleep(0.05)
    return found


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (`make test` installs it)")
def test_the_page_generates_images_with_their_routing_in_a_real_browser(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page()
        page.goto(server)
        page.fill("#key", KEY)
        page.dispatch_event("#key", "change")
        page.wait_for_function("document.getElementById('about').textContent.includes('3 experts')")
        page.fill("#prompt", "a photo of a bag\na photo of a coat")
        page.fill("#steps", "4")
        page.select_option("#strategy", "top2")
        page.click("#go")
        page.wait_for_function("[...document.querySelectorAll('#results img')].filter(i => i.naturalWidth > 0).length == 2")
        heatmaps = page.eval_on_selector_all("canvas.heatmap", """canvases => canvases.map(c => {
            const pixels = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let inked = 0; for (let i = 3; i < pixels.length; i += 4) inked += pixels[i] > 0;
            return [c.width, inked]; })""")
        axes = page.eval_on_selector_all(".routing", """plots => plots.map(p => [
            p.querySelector('.title').textContent, [...p.querySelectorAll('.experts span')].map(s => s.textContent),
            p.querySelector('.t').textContent])""")
        captions = page.eval_on_selector_all("#results figcaption", "nodes => nodes.map(n => n.textContent)")
        page.screenshot(path=str(tmp_path / "page.png"))
        page.set_viewport_size({"width": 400, "height": 800})  # a phone: nothing may stick out sideways
        widest = page.evaluate("document.documentElement.scrollWidth")
        browser.close()
    assert [width for width, _ in heatmaps] == [4 * 6, 4 * 6] and all(inked > 0 for _, inked in heatmaps)
    assert axes == [["router weights per step", ["expert 0", "expert 1", "expert 2"], "t=1 noisesteps 1–4 →t=0"]] * 2
    for caption in captions:  # the batch's time shared by its two images, not the whole time under each
        each, together = re.search(r"· ([\d.]+) s per image \(2 images sampled together in ([\d.]+) s\)",
                                   caption).groups()
        assert "experts" in caption and "expert passes" in caption
        assert float(each) == pytest.approx(float(together) / 2, abs=0.011)
    assert widest <= 400
    assert (tmp_path / "page.png").stat().st_size > 1000
