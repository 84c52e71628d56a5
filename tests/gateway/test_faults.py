"""Failover, dead upstreams, client disconnects, and a recorder that cannot write."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from pathlib import Path

import httpx
import openai
import pytest

from airlock.store.embedded import DataDir, DuckDBSpanReader
from helpers import API_KEY, Gateway, Sim, free_port, wait_recorded, write_config

AUTH = {"Authorization": f"Bearer {API_KEY}"}
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}


def hops_of(data_dir: Path, span_id: str) -> list[dict]:
    return DuckDBSpanReader(DataDir.at(data_dir)).sql(
        "SELECT * FROM hops WHERE span_id = ? ORDER BY attempt", [span_id]
    )


def test_failover_on_5xx_and_connect_error_records_each_hop(tmp_path: Path) -> None:
    eu, us = Sim("eu-west-1", "--error-rate", "1", "--error-kinds", "503"), Sim("us-east-1")
    dead_port = free_port()  # nothing listens here
    sims = {"sim-eu": eu, "sim-us": us}
    cfg = write_config(tmp_path, sims)
    text = cfg.read_text().replace(
        "routes:\n",
        "routes:\n- alias: far\n  targets:\n  - {upstream: sim-dead, model: sim-large}\n"
        "  - {upstream: sim-us, model: sim-large}\n",
        1,
    )
    text = text.replace(
        "upstreams:\n",
        f"upstreams:\n- name: sim-dead\n  base_url: http://127.0.0.1:{dead_port}/v1\n"
        "  region: ap-south-1\n  jurisdiction: IN\n  deployment: simulator\n"
        "  connect_timeout_s: 0.5\n  models: [{name: sim-large}]\n",
        1,
    )
    cfg.write_text(text)
    gw = Gateway(cfg)
    try:
        r = httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers=AUTH)
        assert r.status_code == 200 and "[us-east-1]" in r.json()["choices"][0]["message"]["content"]
        row = wait_recorded(gw.data_dir, 1, where=f"request_id = '{r.headers['x-request-id']}'")[0]
        assert row["airlock.upstream"] == "sim-us" and row["airlock.attempts"] == 2
        assert row["airlock.upstream.jurisdiction"] == "US"
        hops = hops_of(gw.data_dir, row["span_id"])
        assert [(h["upstream"], h["outcome"], h["http_status"]) for h in hops] == [
            ("sim-eu", "http_5xx", 503),
            ("sim-us", "ok", 200),
        ]
        assert hops[0]["region"] == "eu-west-1" and hops[0]["node"] == "gw-test" and "503" in hops[0]["reason"]

        r = httpx.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": "far"}, headers=AUTH)
        assert r.status_code == 200
        row = wait_recorded(gw.data_dir, 1, where=f"request_id = '{r.headers['x-request-id']}'")[0]
        hops = hops_of(gw.data_dir, row["span_id"])
        assert [(h["upstream"], h["outcome"]) for h in hops] == [("sim-dead", "connect_error"), ("sim-us", "ok")]

        us.stop()  # now every upstream of "chat" is down
        r = httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers=AUTH)
        assert r.status_code == 502 and r.headers["content-type"].startswith("application/problem+json")
        problem = r.json()
        assert [h["upstream"] for h in problem["hops"]] == ["sim-eu", "sim-us"]
        assert [h["outcome"] for h in problem["hops"]] == ["http_5xx", "connect_error"]
        row = wait_recorded(gw.data_dir, 1, where=f"request_id = '{r.headers['x-request-id']}'")[0]
        assert row["status"] == "error" and row["error_type"] == "upstreams-exhausted"
        assert len(hops_of(gw.data_dir, row["span_id"])) == 2
    finally:
        gw.stop()
        eu.stop()
        us.stop()


def test_upstream_timeout_fails_over(tmp_path: Path) -> None:
    slow, fast = Sim("eu-west-1", "--ttft-ms", "3000"), Sim("us-east-1")
    cfg = write_config(tmp_path, {"sim-eu": slow, "sim-us": fast})
    cfg.write_text(
        cfg.read_text().replace("api_key_env: TEST_UPSTREAM_KEY", "api_key_env: TEST_UPSTREAM_KEY\n  timeout_s: 0.5")
    )
    gw = Gateway(cfg)
    try:
        r = httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers=AUTH, timeout=10)
        assert r.status_code == 200
        row = wait_recorded(gw.data_dir, 1, where=f"request_id = '{r.headers['x-request-id']}'")[0]
        assert [h["outcome"] for h in hops_of(gw.data_dir, row["span_id"])] == ["timeout", "ok"]
    finally:
        gw.stop()
        slow.stop()
        fast.stop()


def test_client_disconnect_mid_stream_cancels_upstream(tmp_path: Path) -> None:
    slow = Sim("eu-west-1", "--tokens-per-s", "20", "--output-tokens", "200")
    gw = Gateway(write_config(tmp_path, {"sim-eu": slow}))
    try:
        with socket.create_connection(("127.0.0.1", gw.port)) as s:
            body = b'{"model": "chat", "stream": true, "messages": [{"role": "user", "content": "long"}]}'
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + API_KEY.encode()
                + b"\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            head = s.recv(4096)
            assert b"200 OK" in head
            while b"data:" not in head:
                head += s.recv(4096)
        rows = wait_recorded(gw.data_dir, 1, where="status = 'cancelled'")
        assert rows[0]["error_type"] == "client_disconnected" and rows[0]["http_status"] == 499
        assert rows[0]["airlock.payload.response"]  # what arrived before the disconnect is kept
        deadline = time.monotonic() + 5
        while slow.stats()["streams_aborted"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert slow.stats()["streams_aborted"] == 1 and slow.stats()["streams_completed"] == 0
    finally:
        gw.stop()
        slow.stop()


@pytest.mark.parametrize("policy", ["serve", "refuse"])
def test_unwritable_store_keeps_serving_or_refuses_and_loses_nothing(
    tmp_path: Path, sims: dict[str, Sim], policy: str
) -> None:
    cfg = write_config(
        tmp_path, {"sim-eu": sims["sim-eu"]}, recorder={"segment_max_age_s": 0.1, "on_record_failure": policy}
    )
    gw = Gateway(cfg)
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=API_KEY, max_retries=0)
    spans_dir = gw.data_dir / "segments" / "spans"
    try:
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "before"}])
        wait_recorded(gw.data_dir, 1)
        # Make the segment folder unwritable in a way root cannot bypass: put a file where it was.
        shutil.move(spans_dir, tmp_path / "spans-aside")
        spans_dir.write_text("not a directory")
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "during"}])
        deadline = time.monotonic() + 5
        while httpx.get(f"{gw.url}/healthz").json()["status"] == "ok" and time.monotonic() < deadline:
            time.sleep(0.05)
        health = httpx.get(f"{gw.url}/healthz")
        assert health.json()["status"] == "degraded" and health.json()["recorder_error"]
        r = httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers=AUTH)
        if policy == "serve":
            assert r.status_code == 200 and health.status_code == 200
        else:
            assert r.status_code == 503 and r.json()["type"].endswith("recorder-unavailable")
        # The disk comes back: everything acknowledged is written, nothing dropped.
        spans_dir.unlink()
        shutil.move(tmp_path / "spans-aside", spans_dir)
        rows = wait_recorded(gw.data_dir, 3)
        deadline = time.monotonic() + 5  # the writer process reports the recovery as it happens
        while httpx.get(f"{gw.url}/healthz").json()["status"] != "ok" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(f"{gw.url}/healthz").json()["status"] == "ok"
        assert "airlock_recorder_dropped_total 0" in httpx.get(f"{gw.url}/metrics").text
        assert len(rows) == 3
    finally:
        client.close()
        gw.stop()


@pytest.mark.parametrize("durable", [False, True])
def test_kill_9_loses_no_acknowledged_record(tmp_path: Path, sims: dict[str, Sim], durable: bool) -> None:
    # Segments are never flushed before the kill (max age 1 h): the records live only in the write-ahead file.
    cfg = write_config(tmp_path, {"sim-eu": sims["sim-eu"]}, recorder={"segment_max_age_s": 3600, "durable": durable})
    gw = Gateway(cfg)
    ids = []
    for i in range(20):
        r = httpx.post(
            f"{gw.url}/v1/chat/completions",
            headers=AUTH,
            json={"model": "chat", "messages": [{"role": "user", "content": f"m{i}"}]},
        )
        ids.append(r.headers["x-request-id"])
    if not durable:
        time.sleep(0.5)  # default mode: the writer reaches the write-ahead file within milliseconds
    os.killpg(gw.p.pid, signal.SIGKILL)
    gw.stop()
    assert list((gw.data_dir / "wal").glob("*.wal"))
    gw2 = Gateway(cfg)  # recovery replays the orphaned write-ahead file into a segment
    try:
        cfg.write_text(cfg.read_text())
        rows = wait_recorded(gw.data_dir, 20, timeout=15, where=f"request_id IN ({','.join(repr(i) for i in ids)})")
        assert sorted(r["request_id"] for r in rows) == sorted(ids)
        from airlock.store.embedded import BlobReader

        store = BlobReader(DataDir.at(gw.data_dir))
        assert all(store.get(r["airlock.payload.response"]) for r in rows)
    finally:
        gw2.stop()


def test_a_killed_worker_leaves_its_writer_to_write_out_what_it_was_handed(
    tmp_path: Path, sims: dict[str, Sim]
) -> None:
    # Segments are never flushed on age (1 h): only the writer process's own shutdown writes them.
    cfg = write_config(tmp_path, {"sim-eu": sims["sim-eu"]}, recorder={"segment_max_age_s": 3600})
    gw = Gateway(cfg)
    try:
        ids = []
        for _ in range(30):
            ids.append(httpx.post(f"{gw.url}/v1/chat/completions", headers=AUTH, json=CHAT).headers["x-request-id"])
        time.sleep(0.2)  # handed over within milliseconds
        assert "airlock_recorder_accepted_total 30" in httpx.get(f"{gw.url}/metrics").text
        writers = Path(f"/proc/{gw.p.pid}/task/{gw.p.pid}/children").read_text().split()
        assert len(writers) == 1  # the worker's writer process
        os.kill(gw.p.pid, signal.SIGKILL)  # the worker alone, as the OOM killer would
        deadline = time.monotonic() + 15
        while Path(f"/proc/{writers[0]}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        rows = wait_recorded(gw.data_dir, 30, timeout=5)
        assert sorted(r["request_id"] for r in rows) == sorted(ids)
        assert not list((gw.data_dir / "wal").glob("*.wal"))  # written out and cleaned up, not left to recovery
    finally:
        gw.stop()
