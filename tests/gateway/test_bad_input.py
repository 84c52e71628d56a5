"""Bad input on the model API that answered 500 (or was forwarded) on a real gateway: each is a 400
problem+json that names what is wrong, recorded as a rejected request, and the worker keeps serving."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from helpers import API_KEY, Gateway, Sim, wait_recorded, write_config

AUTH = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
MESSAGES = '"messages": [{"role": "user", "content": "hello"}]'


@pytest.fixture(scope="module")
def gw(sims: dict[str, Sim], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    # The route "chat" serves the upstream model "sim-large": the gateway re-encodes every body it forwards.
    g = Gateway(write_config(tmp_path_factory.mktemp("bad-input"), {"sim-eu": sims["sim-eu"]}))
    yield g
    g.stop()
    assert "Traceback" not in g.out, g.out[-4000:]  # no bad input is a defect


def nested(levels: int) -> bytes:
    """A chat body whose JSON nests `levels` deep in all (the top-level object is the first level)."""
    inner = levels - 1
    return f'{{"model": "chat", {MESSAGES}, "metadata_blob": {"[" * inner}{"]" * inner}}}'.encode()


def assert_rejected(gw: Gateway, status: int, headers: Any, problem: dict[str, Any]) -> dict[str, Any]:
    assert status == 400, problem
    assert headers["content-type"].startswith("application/problem+json")
    assert problem["type"] == "urn:airlock:problem:bad-request"
    request_id = headers["x-request-id"]
    row = wait_recorded(gw.data_dir, 1, where=f"request_id = '{request_id}'")[0]
    assert row["kind"] == "gateway.reject" and row["http_status"] == 400 and row["error_type"] == "bad-request"
    ok = httpx.post(f"{gw.url}/v1/chat/completions", content=f'{{"model": "chat", {MESSAGES}}}', headers=AUTH)
    assert ok.status_code == 200  # the worker is still serving
    return row


@pytest.mark.parametrize("levels", [256, 600, 1000])
def test_deeply_nested_json_is_refused_before_anything_walks_it(gw: Gateway, levels: int) -> None:
    r = httpx.post(f"{gw.url}/v1/chat/completions", content=nested(levels), headers=AUTH)
    problem = r.json()
    assert_rejected(gw, r.status_code, r.headers, problem)
    assert "nests" in problem["detail"] and problem["limit"] == 128


def test_json_nested_to_the_limit_is_served(gw: Gateway) -> None:
    r = httpx.post(f"{gw.url}/v1/chat/completions", content=nested(128), headers=AUTH)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("options", [5, [1], "usage", True])
def test_stream_options_that_is_not_an_object_is_refused(gw: Gateway, options: object) -> None:
    body = {"model": "chat", "stream": True, "stream_options": options, "messages": [{"role": "user", "content": "x"}]}
    r = httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=AUTH)
    problem = r.json()
    assert_rejected(gw, r.status_code, r.headers, problem)
    assert problem["field"] == "stream_options"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", -1),
        ("max_tokens", 0),
        ("max_tokens", 1.5),
        ("max_tokens", True),
        ("max_tokens", 1e300),
        ("max_tokens", "10"),
        ("max_completion_tokens", -5),
        ("max_completion_tokens", 10**8),
    ],
)
def test_a_token_limit_that_is_not_a_sane_positive_integer_is_refused(gw: Gateway, field: str, value: object) -> None:
    body = {"model": "chat", field: value, "messages": [{"role": "user", "content": "x"}]}
    r = httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=AUTH)
    problem = r.json()
    assert_rejected(gw, r.status_code, r.headers, problem)
    assert problem["field"] == field and f"'{field}'" in problem["detail"]


def test_a_token_limit_within_bounds_is_forwarded(gw: Gateway) -> None:
    limits = {"max_tokens": 7, "max_completion_tokens": 9}
    body = {"model": "chat", **limits, "messages": [{"role": "user", "content": "x"}]}
    assert httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=AUTH).status_code == 200


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models"])
def test_a_non_ascii_byte_in_the_authorization_header_is_a_bad_request(gw: Gateway, path: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        body = f'{{"model": "chat", {MESSAGES}}}'.encode()
        conn.putrequest("POST" if path.endswith("completions") else "GET", path)
        conn.putheader("Authorization", b"Bearer sk-test-\xe9\xff")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        problem = orjson.loads(r.read())
        headers = {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()
    assert problem["detail"] == "the Authorization header must be ASCII"
    if path == "/v1/models":  # not a model call: answered, not recorded
        assert r.status == 400 and headers["content-type"].startswith("application/problem+json")
        return
    assert_rejected(gw, r.status, headers, problem)
