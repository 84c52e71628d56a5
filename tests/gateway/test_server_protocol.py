"""The connection below the application, over raw sockets to a real gateway: requests aiohttp cannot
parse are answered as problem+json and logged in one line without their bytes; a client's headers, its
body and an idle connection each have a deadline."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from helpers import API_KEY, Gateway, Sim, write_config

TLS_CLIENT_HELLO = bytes.fromhex("16030100a5010000a10303") + bytes(range(32)) + b"\x00\x00\x02\x13\x01\x01\x00"

MALFORMED = {
    "bad header byte": (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\x01\r\n\r\n", 400),
    "CR in the target": (b"GET /v1/mod\rels HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", 400),
    "duplicate Content-Length": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        400,
    ),
    "oversized header": (
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s" + b"a" * 9000 + b"\r\n\r\n",
        431,
    ),
    "space before the colon": (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nx-api-key : %s\r\n\r\n", 400),
    "TLS on the plain port": (TLS_CLIENT_HELLO, 400),
}


def exchange(port: int, data: bytes, wait: float = 5.0) -> tuple[bytes, float]:
    """Send `data` on a fresh connection and read until the gateway closes it: (all bytes, seconds taken).
    Fails if the connection is still open after `wait` seconds."""
    start = time.monotonic()
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        if data:
            s.sendall(data)
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                raise AssertionError(f"the connection was still open after {wait}s") from None
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks), time.monotonic() - start


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def test_unparseable_requests_are_problem_json_logged_once_without_the_key(
    tmp_path: Path, sims: dict[str, Sim]
) -> None:
    gw = Gateway(write_config(tmp_path, {"sim-eu": sims["sim-eu"]}))
    try:
        for name, (template, status) in MALFORMED.items():
            raw, _ = exchange(gw.port, template.replace(b"%s", API_KEY.encode()))
            code, headers, body = parse(raw)
            assert code == status, name
            assert headers["content-type"].startswith("application/problem+json"), name
            assert headers.get("x-request-id"), name
            problem = json.loads(body)
            slug = "headers-too-large" if status == 431 else "bad-request"
            assert problem["status"] == status and problem["type"] == f"urn:airlock:problem:{slug}", name
            assert API_KEY not in body.decode(), name
        assert httpx.get(f"{gw.url}/healthz").status_code == 200  # still serving
    finally:
        gw.stop()
    refusals = [line for line in gw.out.splitlines() if "not valid HTTP" in line]
    assert len(refusals) == len(MALFORMED), gw.out
    assert "Traceback" not in gw.out and API_KEY not in gw.out


@pytest.mark.parametrize("kind", ["headers", "body"])
def test_a_request_that_stops_arriving_is_answered_408_and_closed(
    tmp_path: Path, sims: dict[str, Sim], kind: str
) -> None:
    server = {"headers_timeout_s": 0.3, "body_timeout_s": 0.3, "idle_timeout_s": 5.0}
    gw = Gateway(write_config(tmp_path, {"sim-eu": sims["sim-eu"]}, server=server))
    try:
        head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
        partial = head if kind == "headers" else head + "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        raw, took = exchange(gw.port, partial.encode(), wait=3.0)
        code, headers, body = parse(raw)
        assert code == 408 and headers["content-type"] == "application/problem+json" and headers["x-request-id"]
        assert json.loads(body)["type"] == "urn:airlock:problem:request-timeout"
        assert took < 2.0
        r = httpx.post(  # a request that arrives in time is served as before
            f"{gw.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 200
    finally:
        gw.stop()


def test_an_idle_connection_is_closed_and_keep_alive_works_within_the_timeout(
    tmp_path: Path, sims: dict[str, Sim]
) -> None:
    server = {"headers_timeout_s": 5.0, "body_timeout_s": 5.0, "idle_timeout_s": 0.5}
    gw = Gateway(write_config(tmp_path, {"sim-eu": sims["sim-eu"]}, server=server))
    try:
        raw, took = exchange(gw.port, b"", wait=3.0)  # connects and never sends a byte
        assert raw == b"" and took < 2.5
        with httpx.Client() as client:  # two requests on one connection, the second after a short pause
            for _ in range(2):
                assert client.get(f"{gw.url}/healthz").status_code == 200
                time.sleep(0.1)
        request = f"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\r\n".encode()
        raw, took = exchange(gw.port, request, wait=3.0)  # answered, then closed once idle
        assert parse(raw)[0] == 200 and took < 2.5
    finally:
        gw.stop()
