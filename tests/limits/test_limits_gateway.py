"""Rate limits on the model API through a real gateway: N per window per partition, refused with 429,
Retry-After and the RateLimit headers, the verdict on the span; one budget across workers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson

from helpers import API_KEY, OTHER_KEY, Gateway, Sim, wait_recorded, write_config

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def _post(url: str, key: str = API_KEY, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}", **headers}, timeout=10
    )


def test_a_tenant_over_its_limit_gets_429_with_the_rate_limit_headers(tmp_path: Path, sims: dict[str, Sim]) -> None:
    limits = [{"name": "per-tenant", "per": ["tenant"], "requests": 3, "window_s": 60}]
    gw = Gateway(write_config(tmp_path, {"sim-eu": sims["sim-eu"]}, limits=limits))
    try:
        answers = [_post(gw.url) for _ in range(5)]
        assert [r.status_code for r in answers] == [200, 200, 200, 429, 429]
        refused = answers[3]
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert 1 <= int(refused.headers["Retry-After"]) <= 20  # one request's worth of a 3-per-minute quota
        assert refused.headers["RateLimit-Policy"].startswith('"per-tenant";q=3;w=60;pk=:')
        assert refused.headers["RateLimit"].startswith('"per-tenant";r=0;t=')
        problem = refused.json()
        assert problem["status"] == 429 and problem["limit"] == "per-tenant"
        assert "tenant=acme" in problem["detail"]
        # Another tenant has a bucket of its own.
        assert _post(gw.url, OTHER_KEY).status_code == 200
        rows = wait_recorded(gw.data_dir, 6)
        denied = [r for r in rows if r["http_status"] == 429]
        assert len(denied) == 2
        decisions = orjson.loads(denied[0]["airlock.decisions"])
        verdict = next(d for d in decisions if d["kind"] == "limits")
        assert verdict["outcome"] == "deny" and verdict["limit"] == "per-tenant"
    finally:
        gw.stop()


def test_a_limit_per_agent_keeps_each_agent_to_its_own_bucket(tmp_path: Path, sims: dict[str, Sim]) -> None:
    limits = [{"name": "per-agent", "per": ["tenant", "agent"], "requests": 2, "window_s": 60}]
    gw = Gateway(write_config(tmp_path, {"sim-eu": sims["sim-eu"]}, limits=limits))
    try:
        a = [_post(gw.url, **{"x-airlock-agent": "planner-1"}).status_code for _ in range(3)]
        b = [_post(gw.url, **{"x-airlock-agent": "planner-2"}).status_code for _ in range(3)]
        assert a == [200, 200, 429] and b == [200, 200, 429]
    finally:
        gw.stop()


def test_workers_of_one_gateway_share_one_budget(tmp_path: Path, sims: dict[str, Sim]) -> None:
    limits = [{"name": "shared", "per": ["tenant"], "requests": 10, "window_s": 3600}]
    gw = Gateway(write_config(tmp_path, {"sim-eu": sims["sim-eu"]}, limits=limits), "--workers", "2")
    try:
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: _post(gw.url).status_code, range(24)))
        assert codes.count(200) == 10 and codes.count(429) == 14
    finally:
        gw.stop()
