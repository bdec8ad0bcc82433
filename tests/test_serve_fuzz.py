"""Hypothesis throws random bodies at the HTTP API: every answer is a 200 or a 4xx, never a 500, and the server
keeps serving after each. The app runs in this process (FastAPI's TestClient) over the tiny three-expert
pipeline, with the server's step limit at 2, so a body that samples costs milliseconds."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testkit.serve import app_client

ROUTES = ["/v1/images/generations", "/api/jobs"]
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                           max_size=3), max_leaves=8)
# Values near the edge of each field's range, and any JSON at all in their place.
FIELDS = {
    "prompt": st.sampled_from(["a bag", "a coat\na shirt", "", " ", "\n"]) | st.text(max_size=20) | JSON,
    "n": st.integers(-2, 12) | JSON,
    "steps": st.integers(-2, 3) | JSON,
    "seed": st.integers() | st.integers(2**63 - 2, 2**64 + 2) | st.integers(-2**63 - 2, -2**63 + 2) | JSON,
    "guidance": st.floats() | st.integers(-3, 10) | JSON,
    "strategy": st.sampled_from(["top1", "top2", "full", "topk:4", "nucleus:0.5", "oracle:2", "oracle:3", "x"]) | JSON,
    "size": st.sampled_from(["8x8", "auto", "16x16"]) | JSON,
    "response_format": st.sampled_from(["url", "b64_json", "png"]) | JSON,
    "model": st.sampled_from(["pipeline", "dall-e-3"]) | JSON,
}
VALID = {"prompt": "a bag", "steps": 1}
# A valid request with one or two fields changed (so that a bad value meets sampling, and a batch), keys at random,
# any JSON, and bytes that are not JSON.
CHANGES = st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=2, unique=True).flatmap(
    lambda keys: st.fixed_dictionaries({key: FIELDS[key] for key in keys}))
CHANGED = CHANGES.map(lambda changes: {**VALID, **changes})
KEYS_AT_RANDOM = st.dictionaries(st.sampled_from(sorted(FIELDS)) | st.text(max_size=6), JSON, max_size=5)
# json.dumps writes NaN and Infinity (JSON's extensions, which Python's json reads back): those values get in too.
BODIES = (st.one_of(CHANGED, CHANGED, KEYS_AT_RANDOM, JSON).map(lambda body: json.dumps(body).encode())
          | st.binary(max_size=40) | st.text(max_size=40).map(str.encode))


@pytest.fixture(scope="module")
def client(three_experts):
    with app_client(three_experts, max_steps=2) as client:
        yield client


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(ROUTES), BODIES)
def test_any_body_gets_a_200_or_a_4xx_and_the_server_keeps_serving(client, route, body):
    answer = client.post(route, content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200 or 400 <= answer.status_code < 500, (answer.status_code, answer.text)
    if answer.status_code != 200:
        assert set(answer.json()["error"]) == {"message", "type", "param", "code"}, answer.text
    assert client.get("/healthz").json()["status"] == "ok" and client.app.state.engine.worker.is_alive()


def test_the_server_still_draws_after_the_fuzz(client):
    answer = client.post("/v1/images/generations", json={"prompt": "a bag", "steps": 2, "response_format": "b64_json"})
    assert answer.status_code == 200 and len(answer.json()["data"]) == 1
