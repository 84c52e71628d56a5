"""Two gateway replicas with data directories of their own on one PostgreSQL, Redis, ClickHouse
engine and S3 bucket: one record (either node's read commands see both nodes' traffic), one ledger,
one rate limit; Redis stopped mid-run loses no record."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

import servers
from helpers import API_KEY, Gateway, Sim, write_config

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello from a replica"}], "max_tokens": 4}
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _wait_gone(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=0.5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.ping()
        except redis.exceptions.RedisError:
            return
        time.sleep(0.05)
    raise AssertionError("redis-server did not stop")


def _cli(config: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "airlock", *args, "-c", str(config)],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_two_replicas_keep_one_record_one_ledger_one_limit(
    tmp_path: Path,
    sims: dict[str, Sim],
    postgres_dsn: str,
    s3_endpoint: str,
    s3_bucket: str,
    clickhouse_url: str,
) -> None:
    redis_dir = tmp_path / "redis"
    redis_url = servers.start_redis(redis_dir)
    env = {
        "TEST_PG_DSN": postgres_dsn,
        "TEST_REDIS_URL": redis_url,
        "TEST_CH_URL": clickhouse_url,
        "TEST_S3_KEY": "test",
        "TEST_S3_SECRET": "test",
    }
    store = {
        "postgres": {"dsn_env": "TEST_PG_DSN"},
        "redis": {"url_env": "TEST_REDIS_URL", "on_unavailable": "fail_open"},
        "clickhouse": {"url_env": "TEST_CH_URL", "database": "record"},
        "s3": {"endpoint": s3_endpoint, "bucket": s3_bucket, "access_key_env": "TEST_S3_KEY",
               "secret_key_env": "TEST_S3_SECRET"},
    }  # fmt: skip
    limits = [{"name": "per-tenant", "per": ["tenant"], "requests": 30, "window_s": 3600}]
    configs, gateways = [], []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            config = write_config(
                tmp_path / name, {"sim-eu": sims["sim-eu"]}, store=store, limits=limits,
                node={"name": f"eu-{name}", "region": "eu-west"},
            )  # fmt: skip
            configs.append(config)
            gateways.append(Gateway(config, env=env))
        a, b = gateways
        codes = [httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers=AUTH, timeout=10).status_code
                 for _ in range(20) for gw in (a, b)]  # fmt: skip
        assert codes.count(200) == 30 and codes.count(429) == 10  # one limit, not one per replica
        # Redis away: the limit fails open, and every answered request is still recorded.
        servers.stop(redis_dir)
        _wait_gone(redis_url)
        during = []
        for i in range(10):  # ten seconds without Redis, half of it on each node
            gw = (a, b)[i % 2]
            during.append(httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers=AUTH, timeout=10).status_code)
            time.sleep(1.0)
        assert during == [200] * 10
        servers.start_redis(redis_dir)
        item = {"id": "review-1", "category": "human_review", "amount_usd": 2.5, "task": "t-1"}
        for gw in (a, b):  # the same item posted to each node is stored once
            posted = httpx.post(f"{gw.url}/v1/ledger/items", json=item, headers=AUTH, timeout=10)
            assert posted.status_code in (200, 201), posted.text
    finally:
        for gw in gateways:
            gw.stop()
        servers.stop(redis_dir)
    # One record: read from node b's config, it holds both nodes' calls.
    deadline = time.monotonic() + 20
    while True:
        listed = orjson.loads(_cli(configs[1], env, "traces", "list", "--json", "--limit", "500"))
        if len(listed) >= 50 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # 30 admitted and 10 refused (a refusal is recorded too) across both nodes, and the 10 answered
    # while Redis was away: nothing lost, and more than either node served alone.
    assert len(listed) == 50
    bill = orjson.loads(_cli(configs[0], env, "cost", "report", "--by", "category", "--format", "json"))
    reviews = [r for r in bill["rows"] if r["key"].get("category") == "human_review"]
    assert len(reviews) == 1 and reviews[0]["total_usd"] == pytest.approx(2.5)
