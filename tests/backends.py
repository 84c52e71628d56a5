"""Fixtures for the server backends: a fresh PostgreSQL database per test, a Redis key prefix per
test, an S3-compatible server (moto's, in process, on 127.0.0.1) with a fresh bucket per test, and
ClickHouse's engine behind its HTTP interface in a process of its own (`clickhouse_url`).

PostgreSQL and Redis come from AIRLOCK_TEST_POSTGRES_DSN / AIRLOCK_TEST_REDIS_URL (set by `make test`,
which starts them with tests/servers.py); without them the fixtures start their own where the
machine allows. With AIRLOCK_TEST_REQUIRE_BACKENDS=1 (set by .ci/run) a backend
that cannot be had fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import servers


def _unavailable(what: str, why: str) -> None:
    message = f"{what} is not available: {why}"
    if os.environ.get("AIRLOCK_TEST_REQUIRE_BACKENDS") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def _server_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    env = {k: v for k in ("AIRLOCK_TEST_POSTGRES_DSN", "AIRLOCK_TEST_REDIS_URL") if (v := os.environ.get(k))}
    root: Path | None = None
    if len(env) < 2:
        root = Path(f"/tmp/airlock-test-servers-{os.getpid()}")
        try:
            started = servers.start(root)
        except Exception as e:  # any failure to start one means "not on this machine"
            env.setdefault("_error", f"{type(e).__name__}: {e}")
        else:
            for key, value in started.items():
                env.setdefault(key, value)
    yield env
    if root is not None:
        servers.stop(root)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_dsn(_server_env: dict[str, str]) -> Iterator[str]:
    """A DSN for a new, empty database of its own, dropped after the test."""
    base = _server_env.get("AIRLOCK_TEST_POSTGRES_DSN")
    if not base:
        _unavailable("PostgreSQL", _server_env.get("_error", "AIRLOCK_TEST_POSTGRES_DSN is not set"))
    import psycopg

    name = f"airlock_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"{base.replace('dbname=postgres', '')} dbname={name}".strip()
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url(_server_env: dict[str, str]) -> str:
    url = _server_env.get("AIRLOCK_TEST_REDIS_URL")
    if not url:
        _unavailable("Redis", _server_env.get("_error", "AIRLOCK_TEST_REDIS_URL is not set"))
    return str(url)


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of the test's own; its keys are deleted after the test."""
    import redis

    prefix = f"airlock-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """An S3-compatible server (moto's) on 127.0.0.1, for the whole session."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as e:
        _unavailable("moto's S3 server", str(e))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A new, empty bucket's name on the session's S3 server (credentials: any, e.g. 'test'/'test')."""
    import boto3

    name = f"airlock-test-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3", endpoint_url=s3_endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def clickhouse_url(tmp_path: Path) -> Iterator[str]:
    """ClickHouse's engine behind its HTTP interface (tests/clickhouse_http.py) in a process of its own,
    so that several processes (gateway replicas, the CLI) share one engine as they would a server."""
    import subprocess
    import sys

    from helpers import free_port, wait_http

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "clickhouse_http.py"), str(port), str(tmp_path / "chdb")],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
