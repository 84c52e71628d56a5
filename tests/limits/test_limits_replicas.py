"""One limit across two gateway replicas (separate data directories) sharing one Redis, and what the
limit answers while Redis is away: fail closed (refuse, saying why) or fail open (admit, saying so)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson

import servers
from helpers import API_KEY, Gateway, Sim, wait_recorded, write_config

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def _post(url: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
    )


def _replica(
    tmp: Path, name: str, sims: dict[str, Sim], limits: list[dict[str, object]], redis: dict[str, object], url: str
) -> Gateway:
    folder = tmp / name
    folder.mkdir()
    config = write_config(folder, {"sim-eu": sims["sim-eu"]}, limits=limits, store={"redis": redis})
    return Gateway(config, env={"TEST_REDIS_URL": url})


def test_two_replicas_hold_one_limit_not_one_each(
    tmp_path: Path, sims: dict[str, Sim], redis_url: str, redis_prefix: str
) -> None:
    limits = [{"name": "shared", "per": ["tenant"], "requests": 10, "window_s": 3600}]
    redis = {"url_env": "TEST_REDIS_URL", "prefix": redis_prefix}
    a = _replica(tmp_path, "a", sims, limits, redis, redis_url)
    b = _replica(tmp_path, "b", sims, limits, redis, redis_url)
    try:
        codes = [_post(gw.url).status_code for _ in range(12) for gw in (a, b)]
        assert codes.count(200) == 10 and codes.count(429) == 14
    finally:
        a.stop()
        b.stop()


def test_redis_away_fails_closed_then_recovers_without_a_restart(tmp_path: Path, sims: dict[str, Sim]) -> None:
    own = tmp_path / "redis-server"
    url = servers.start_redis(own)
    limits = [{"name": "per-tenant", "per": ["tenant"], "requests": 100, "window_s": 60}]
    gw = _replica(tmp_path, "gw", sims, limits, {"url_env": "TEST_REDIS_URL", "on_unavailable": "fail_closed"}, url)
    try:
        assert _post(gw.url).status_code == 200
        servers.stop(own)
        refused = _post(gw.url)
        assert refused.status_code == 429
        assert "cannot be checked (its store is unreachable) and fails closed" in refused.json()["detail"]
        servers.start_redis(own)
        deadline = time.monotonic() + 10
        while (code := _post(gw.url).status_code) != 200 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert code == 200
    finally:
        gw.stop()
        servers.stop(own)


def test_redis_away_fails_open_and_the_span_says_so(tmp_path: Path, sims: dict[str, Sim]) -> None:
    own = tmp_path / "redis-server"
    url = servers.start_redis(own)
    limits = [{"name": "per-tenant", "per": ["tenant"], "requests": 100, "window_s": 60}]
    gw = _replica(tmp_path, "gw", sims, limits, {"url_env": "TEST_REDIS_URL", "on_unavailable": "fail_open"}, url)
    try:
        servers.stop(own)
        assert _post(gw.url).status_code == 200
        rows = wait_recorded(gw.data_dir, 1)
        verdict = next(d for d in orjson.loads(rows[-1]["airlock.decisions"]) if d["kind"] == "limits")
        assert verdict["outcome"] == "allow" and verdict["limits"][0]["decided_by"] == "fail-open"
    finally:
        gw.stop()
        servers.stop(own)
