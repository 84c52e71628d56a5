"""The gateway's one error boundary: every error a handler raises comes out as problem+json with the
request id, a defect is logged once and answered 500 without its message, and every response of every
surface carries x-request-id and traceparent."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import aiohttp
import httpx
import orjson
import pytest
from aiohttp import web

from airlock.errors import Conflict
from airlock.gateway.boundary import error_boundary
from airlock.record.ids import parse_traceparent
from helpers import API_KEY, Gateway, Sim, write_config

READINGS_KEY = "sk-readings-boundary"

AUTH = {"Authorization": f"Bearer {API_KEY}"}
SECRET = "sk-live-do-not-echo"
INCOMING = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def conflict(request: web.Request) -> web.Response:
    raise Conflict("already there", item_id="i-1")


async def defect(request: web.Request) -> web.Response:
    raise ValueError(f"a message with {SECRET} in it")


async def read_body(request: web.Request) -> web.Response:
    await request.read()  # over client_max_size: aiohttp raises HTTPRequestEntityTooLarge
    return web.Response(text="read")


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/elsewhere")


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def call(method: str, path: str, **kwargs: Any) -> tuple[int, Mapping[str, str], bytes]:
    """One request to a real aiohttp server on 127.0.0.1 whose only middleware is the boundary."""

    async def main() -> tuple[int, Mapping[str, str], bytes]:
        app = web.Application(client_max_size=16, middlewares=[error_boundary])
        app.router.add_get("/conflict", conflict)
        app.router.add_get("/defect", defect)
        app.router.add_post("/read", read_body)
        app.router.add_get("/redirect", redirect)
        app.router.add_get("/ok", ok)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.request(method, f"http://127.0.0.1:{port}{path}", allow_redirects=False, **kwargs) as r,
            ):
                return r.status, r.headers.copy(), await r.read()
        finally:
            await runner.cleanup()

    return asyncio.run(main())


def assert_problem(status: int, headers: Mapping[str, str], body: bytes, expected: int) -> dict[str, Any]:
    assert status == expected, body
    assert headers["Content-Type"].startswith("application/problem+json")
    doc: dict[str, Any] = orjson.loads(body)
    assert doc["status"] == expected and doc["instance"] == f"/requests/{headers['x-request-id']}"
    assert parse_traceparent(headers["traceparent"]) is not None
    return doc


def test_an_airlock_error_is_its_problem_document() -> None:
    doc = assert_problem(*call("GET", "/conflict"), 409)
    assert doc["type"] == "urn:airlock:problem:conflict" and doc["detail"] == "already there"
    assert doc["item_id"] == "i-1"


def test_a_defect_is_a_500_naming_only_its_type_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        status, headers, body = call("GET", "/defect")
    doc = assert_problem(status, headers, body, 500)
    assert "ValueError" in doc["detail"] and SECRET not in body.decode()
    logged = [r for r in caplog.records if r.exc_info is not None]
    assert len(logged) == 1 and headers["x-request-id"] in logged[0].getMessage()
    assert logged[0].exc_info is not None and logged[0].exc_info[0] is ValueError


def test_aiohttp_http_errors_are_problem_documents() -> None:
    assert_problem(*call("POST", "/read", data=b"x" * 100), 413)
    doc = assert_problem(*call("GET", "/no-such-route"), 404)
    assert doc["type"] == "urn:airlock:problem:not-found"
    doc = assert_problem(*call("DELETE", "/ok"), 405)
    assert doc["type"] == "urn:airlock:problem:method-not-allowed"


def test_a_redirect_raised_as_an_exception_stays_a_redirect_with_the_trace_headers() -> None:
    status, headers, _ = call("GET", "/redirect")
    assert status == 302 and headers["Location"] == "/elsewhere"
    assert headers["x-request-id"] and parse_traceparent(headers["traceparent"]) is not None


def test_the_callers_trace_is_continued() -> None:
    status, headers, _ = call("GET", "/ok", headers={"traceparent": INCOMING})
    assert status == 200
    trace_id, span_id = parse_traceparent(headers["traceparent"]) or ("", "")
    assert trace_id == INCOMING.split("-")[1] and span_id == headers["x-request-id"] != INCOMING.split("-")[2]


# -- every surface of a real gateway ---------------------------------------------------------------


@pytest.fixture(scope="module")
def gw(sims: dict[str, Sim], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("boundary")
    energy = {
        "gpus": [{"device": "gpu-0", "upstream": "sim-eu"}],
        "readings_keys": [{"name": "gpu-host", "key_sha256": hashlib.sha256(READINGS_KEY.encode()).hexdigest()}],
    }
    g = Gateway(write_config(tmp, sims, energy=energy))
    yield g
    g.stop()


Request = Callable[[Gateway], httpx.Response]
READINGS_AUTH = {"Authorization": f"Bearer {READINGS_KEY}"}
READING = {"readings": [{"device": "gpu-0", "t_ns": 1, "energy_mj": 5}]}
ITEM = {"id": "b-1", "category": "tool", "amount_usd": 0.01, "task": "t-b"}
SURFACES: dict[str, tuple[Request, int]] = {
    "models": (lambda g: httpx.get(f"{g.url}/v1/models", headers=AUTH), 200),
    "models unauthorised": (lambda g: httpx.get(f"{g.url}/v1/models"), 401),
    "no such endpoint": (lambda g: httpx.get(f"{g.url}/v2/nothing"), 404),
    "wrong method": (lambda g: httpx.get(f"{g.url}/v1/chat/completions"), 405),
    "healthz": (lambda g: httpx.get(f"{g.url}/healthz"), 200),
    "metrics": (lambda g: httpx.get(f"{g.url}/metrics"), 200),
    "ledger item": (lambda g: httpx.post(f"{g.url}/v1/ledger/items", json=ITEM, headers=AUTH), 201),
    "ledger invalid": (lambda g: httpx.post(f"{g.url}/v1/ledger/items", json={}, headers=AUTH), 422),
    "ledger wrong method": (lambda g: httpx.get(f"{g.url}/v1/ledger/items", headers=AUTH), 405),
    "energy reading": (lambda g: httpx.post(f"{g.url}/v1/energy/readings", json=READING, headers=READINGS_AUTH), 201),
    "energy invalid": (lambda g: httpx.post(f"{g.url}/v1/energy/readings", json={}, headers=READINGS_AUTH), 422),
    "energy wrong method": (lambda g: httpx.get(f"{g.url}/v1/energy/readings", headers=READINGS_AUTH), 405),
    "otlp export": (lambda g: httpx.post(f"{g.url}/v1/traces", json={}, headers=AUTH), 200),
    "otlp wrong type": (
        lambda g: httpx.post(f"{g.url}/v1/traces", content=b"x", headers={**AUTH, "Content-Type": "text/plain"}),
        415,
    ),
}


@pytest.mark.parametrize("surface", sorted(SURFACES))
def test_every_response_carries_the_request_id_and_traceparent(gw: Gateway, surface: str) -> None:
    send, status = SURFACES[surface]
    r = send(gw)
    assert r.status_code == status, r.text
    parsed = parse_traceparent(r.headers.get("traceparent"))
    assert parsed is not None and parsed[1] == r.headers["x-request-id"]
    if status >= 400:
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["instance"] == f"/requests/{r.headers['x-request-id']}"


def test_a_surface_continues_the_callers_trace(gw: Gateway) -> None:
    for path in ("/v1/models", "/v1/nothing"):
        r = httpx.get(f"{gw.url}{path}", headers={**AUTH, "traceparent": INCOMING})
        assert (parse_traceparent(r.headers["traceparent"]) or ("",))[0] == INCOMING.split("-")[1]
