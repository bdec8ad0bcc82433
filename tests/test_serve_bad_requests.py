"""Every bad HTTP request gets its 4xx in OpenAI's error shape, naming the field and what to change, and the server
serves the next request; a full queue is a 429 with a Retry-After header. The app runs in this process (FastAPI's
TestClient) over the tiny three-expert pipeline, with small limits. The command-line side of `paris serve` (its
port, its limits) is in tests/test_bad_inputs.py."""

from __future__ import annotations

import json
import time

import pytest

from testkit.serve import app_client

IMAGES, JOBS = "/v1/images/generations", "/api/jobs"
LIMITS = {"max_steps": 4, "max_images": 4, "max_prompt_chars": 50, "max_body_bytes": 6000}
SEED_RANGE = "must be in [-9223372036854775808, 18446744073709551615]"


def body(**fields) -> bytes:
    """A request that is fine but for `fields`."""
    return json.dumps({"prompt": "a bag", "steps": 2, **fields}).encode()


CASES = [  # (method, path, body, status, param, words the message must hold)
    # the body itself
    ("POST", IMAGES, b"not json", 400, None, "the request body must be JSON"),
    ("POST", IMAGES, b"", 400, None, "the request body must be JSON"),
    ("POST", IMAGES, b"\xff\xfe{", 400, None, "the request body must be JSON"),
    ("POST", IMAGES, b"[" * 1500 + b"]" * 1500, 400, None, "the request body must be JSON"),  # nested too deep
    ("POST", IMAGES, b'{"prompt": "a bag", "seed": 1' + b"0" * 7000 + b"}", 413, None, "over 6,000 bytes"),
    ("POST", IMAGES, b'{"seed": 1' + b"0" * 4400 + b"}", 400, None, "the request body must be JSON"),  # 4,401 digits
    ("POST", IMAGES, b"[1, 2]", 400, None, "must be a JSON object"),
    ("POST", IMAGES, b'"a bag"', 400, None, "must be a JSON object"),
    # prompt
    ("POST", IMAGES, b"{}", 400, "prompt", "prompt is missing"),
    ("POST", IMAGES, body(prompt=None), 400, "prompt", "prompt is missing"),
    ("POST", IMAGES, body(prompt=5), 400, "prompt", "prompt must be a string or a non-empty list of strings, got 5"),
    ("POST", IMAGES, body(prompt={"text": "a bag"}), 400, "prompt", "got {'text': 'a bag'}"),
    ("POST", IMAGES, body(prompt=[]), 400, "prompt", "non-empty list of strings, got []"),
    ("POST", IMAGES, body(prompt=["a bag", 3]), 400, "prompt", "the list holds 3"),
    ("POST", IMAGES, body(prompt=""), 400, "prompt", "prompt must be a non-empty string"),
    ("POST", IMAGES, body(prompt=" \n "), 400, "prompt", "prompt must be a non-empty string"),
    ("POST", IMAGES, body(prompt="x" * 51), 400, "prompt", "prompt is 51 characters long; at most 50"),
    ("POST", IMAGES, body(prompt=["a bag"] * 5), 400, "prompt", "5 prompts are too many: this server draws at most 4"),
    # n
    ("POST", IMAGES, body(n=0), 400, "n", "n must be an integer from 1 to 4 (at most 4 images per request), got 0"),
    ("POST", IMAGES, body(n=5), 400, "n", "got 5"),
    ("POST", IMAGES, body(n=True), 400, "n", "n must be an integer from 1 to 4"),
    ("POST", IMAGES, body(n=1.0), 400, "n", "got 1.0"),
    ("POST", IMAGES, body(n="2"), 400, "n", "got '2'"),
    ("POST", IMAGES, body(prompt=["a", "b"], n=3), 400, "n", "n must be an integer from 1 to 2"),
    # steps
    ("POST", IMAGES, body(steps=0), 400, "steps", "'steps' must be at least 1, got 0"),
    ("POST", IMAGES, body(steps=5), 400, "steps", "steps must be at most 4 on this server, got 5"),
    ("POST", IMAGES, body(steps=True), 400, "steps", "'steps' must be int, got True"),
    ("POST", IMAGES, body(steps=2.0), 400, "steps", "'steps' must be int, got 2.0"),
    ("POST", IMAGES, body(steps=10**30), 400, "steps", "steps must be at most 4"),
    # guidance
    ("POST", IMAGES, body(guidance=-1), 400, "guidance", "'guidance' must be at least 0, got -1"),
    ("POST", IMAGES, body(guidance=float("inf")), 400, "guidance", "'guidance' must be a finite number, got inf"),
    ("POST", IMAGES, body(guidance=float("nan")), 400, "guidance", "'guidance' must be a finite number, got nan"),
    ("POST", IMAGES, body(guidance=10**400), 400, "guidance", "'guidance' must be a finite number"),
    ("POST", IMAGES, body(guidance=1e308 * 10), 400, "guidance", "must be a finite number"),
    ("POST", IMAGES, body(guidance="7"), 400, "guidance", "'guidance' must be float, got '7'"),
    # seed
    ("POST", IMAGES, body(seed=2**64), 400, "seed", SEED_RANGE),
    ("POST", IMAGES, body(seed=-2**63 - 1), 400, "seed", SEED_RANGE),
    ("POST", IMAGES, body(seed=1.5), 400, "seed", "'seed' must be int, got 1.5"),
    ("POST", IMAGES, body(seed=False), 400, "seed", "'seed' must be int, got False"),
    # strategy, size, response_format, model, fields
    ("POST", IMAGES, body(strategy="bogus"), 400, "strategy", "unknown strategy 'bogus'; choose one of top1"),
    ("POST", IMAGES, body(strategy="oracle:3"), 400, "strategy", "expert 3 does not exist (the run has 3)"),
    ("POST", IMAGES, body(strategy="topk:" + "9" * 400), 400, "strategy", "after the colon"),
    ("POST", IMAGES, body(strategy="nucleus:inf"), 400, "strategy", "needs a probability in (0, 1]"),
    ("POST", IMAGES, body(strategy=2), 400, "strategy", "'strategy' must be str, got 2"),
    ("POST", IMAGES, body(size="16x16"), 400, "size", "size must be 8x8 (the only size this model draws) or auto"),
    ("POST", IMAGES, body(response_format="png"), 400, "response_format", "must be url or b64_json, got 'png'"),
    ("POST", IMAGES, body(model="dall-e-3"), 404, "model", "the model 'dall-e-3' does not exist; this server serves"),
    ("POST", IMAGES, body(model=5), 404, "model", "the model 5 does not exist"),
    ("POST", IMAGES, body(stpes=3), 400, "stpes", "unknown field(s) stpes"),
    # the page's jobs: a prompt per line of one string
    ("POST", JOBS, body(prompt=5), 400, "prompt", "prompt must be a string or a non-empty list of strings"),
    ("POST", JOBS, body(prompt="\n  \n"), 400, "prompt", "prompt must be a non-empty string"),
    ("POST", JOBS, body(prompt="a bag\n" + "x" * 60), 400, "prompt", "prompt is 60 characters long"),
    ("POST", JOBS, body(prompt="a bag\na coat", n=3), 400, "n", "n must be an integer from 1 to 2"),
    ("POST", JOBS, body(seed=2**64), 400, "seed", SEED_RANGE),
    ("POST", JOBS, b"{", 400, None, "the request body must be JSON"),
    # what is not there
    ("GET", "/api/jobs/0123456789abcdef", None, 404, None, "no job 0123456789abcdef"),
    ("GET", "/images/0123456789abcdef/0.png", None, 404, None, "no job 0123456789abcdef"),
    ("GET", "/images/0123456789abcdef/first.png", None, 404, None, "no such resource"),
    ("GET", "/api/run/config.yaml", None, 404, None, "no config.yaml to show"),  # no run served
    ("GET", "/v1/nothing", None, 404, None, "Not Found"),
    ("PUT", IMAGES, body(), 405, None, "Method Not Allowed"),
]


@pytest.fixture(scope="module")
def client(three_experts):
    with app_client(three_experts, **LIMITS) as client:
        yield client


@pytest.mark.parametrize("method, path, content, status, param, words", CASES,
                         ids=[f"{c[0]} {c[1]} {(c[2] or b'')[:40]!r}" for c in CASES])
def test_a_bad_request_gets_its_status_in_openais_shape_and_the_server_serves_the_next(client, method, path,
                                                                                      content, status, param, words):
    answer = client.request(method, path, content=content, headers={"Content-Type": "application/json"})
    error = answer.json()["error"]
    assert answer.status_code == status and set(error) == {"message", "type", "param", "code"}, answer.text
    assert error["param"] == param and words in error["message"], error
    assert len(error["message"]) < 400, "a message quotes what it refuses, cut short"
    assert client.post(IMAGES, content=body(steps=1)).status_code == 200


def test_a_full_queue_is_a_429_with_retry_after_and_the_server_serves_once_it_empties(three_experts):
    with app_client(three_experts, max_steps=200, max_queue=1) as client:
        engine = client.app.state.engine
        running = engine.submit("a bag", steps=200)
        while running.status != "running":
            time.sleep(0.01)
        waiting = engine.submit("a coat", steps=1)
        answer = client.post(JOBS, content=body())
        error = answer.json()["error"]
        assert answer.status_code == 429 and int(answer.headers["Retry-After"]) >= 1, answer.text
        assert error["code"] == "rate_limit_exceeded" and "the server is busy: 1 requests are waiting" in error["message"]
        engine.cancel(running)
        waiting.finished.result(timeout=60)
        assert client.post(IMAGES, content=body(steps=1)).status_code == 200
