"""The ClickHouse fixtures' machinery: a fresh database of its own per test with the migrations
applied, dropped after it, on the real ClickHouse engine in this process (chdb) or, with
AIRLOCK_TEST_CLICKHOUSE_URL set, on that server.

- `clickhouse`: the server when AIRLOCK_TEST_CLICKHOUSE_URL is set, else chdb: every test written on it
  runs against a real server when one is configured.
- `chdb_clickhouse`: always chdb (for what only chdb does).
- `clickhouse_server`: always the server, skipped without one.
- `any_clickhouse`: chdb, then the server (skipped without one).

chdb opens one engine per process on one folder, so every test of a pytest process shares one folder
(named by the process id, removed when the session ends) and keeps apart by database. Import the
fixtures into a conftest or test module (tests/store/clickhouse/conftest.py does)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock.store.clickhouse.migrate import apply_migrations
from airlock.store.clickhouse.transport import ChdbTransport, ClickHouseTransport, HttpTransport

SERVER_URL_ENV = "AIRLOCK_TEST_CLICKHOUSE_URL"


def chdb_folder() -> Path:
    """Where this test process's chdb engine keeps its data."""
    return Path(f"/tmp/airlock-test-chdb-{os.getpid()}")


@pytest.fixture(scope="session")
def _chdb_engine_folder() -> Iterator[Path]:
    folder = chdb_folder()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def fresh_database_name() -> str:
    return "airlock_test_" + uuid.uuid4().hex[:12]


def _migrated(transport: ClickHouseTransport) -> Iterator[ClickHouseTransport]:
    try:
        apply_migrations(transport)
        yield transport
    finally:
        transport.command(f"DROP DATABASE IF EXISTS {transport.database}")
        transport.close()


def fresh_chdb(folder: Path) -> Iterator[ClickHouseTransport]:
    """A ChdbTransport on a fresh, migrated database, dropped when the generator ends."""
    yield from _migrated(ChdbTransport(folder, fresh_database_name()))


def fresh_server(url: str) -> Iterator[ClickHouseTransport]:
    """An HttpTransport on a fresh, migrated database of the server at `url`, dropped when the generator ends."""
    yield from _migrated(HttpTransport(url, fresh_database_name()))


def fresh_clickhouse(folder: Path) -> Iterator[ClickHouseTransport]:
    """What `clickhouse` gives, for fixtures of a wider scope: `yield from fresh_clickhouse(_chdb_engine_folder)`
    (a `for t in fresh_clickhouse(...)` loop to yield something else)."""
    url = os.environ.get(SERVER_URL_ENV)
    yield from (fresh_server(url) if url else fresh_chdb(folder))


@pytest.fixture
def clickhouse(_chdb_engine_folder: Path) -> Iterator[ClickHouseTransport]:
    """A fresh migrated database (dropped after the test): on AIRLOCK_TEST_CLICKHOUSE_URL's server when
    that is set, else on chdb."""
    yield from fresh_clickhouse(_chdb_engine_folder)


@pytest.fixture
def chdb_clickhouse(_chdb_engine_folder: Path) -> Iterator[ClickHouseTransport]:
    """A ChdbTransport on a fresh, migrated database of its own (dropped after the test)."""
    yield from fresh_chdb(_chdb_engine_folder)


@pytest.fixture
def clickhouse_server() -> Iterator[ClickHouseTransport]:
    """An HttpTransport on a fresh, migrated database of the server AIRLOCK_TEST_CLICKHOUSE_URL names."""
    url = os.environ.get(SERVER_URL_ENV)
    if not url:
        pytest.skip(f"{SERVER_URL_ENV} is not set: no ClickHouse server to test against")
    yield from fresh_server(url)


@pytest.fixture(params=["chdb", "server"])
def any_clickhouse(request: pytest.FixtureRequest) -> ClickHouseTransport:
    """Each engine in turn: chdb in process, then a real server (skipped unless one is configured)."""
    name = "chdb_clickhouse" if request.param == "chdb" else "clickhouse_server"
    transport: ClickHouseTransport = request.getfixturevalue(name)
    return transport
