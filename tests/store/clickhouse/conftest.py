"""Fixtures for the ClickHouse backend's tests: `clickhouse` (chdb in process, a fresh migrated database
per test), `clickhouse_server` (the same on AIRLOCK_TEST_CLICKHOUSE_URL's server, else skipped) and
`any_clickhouse` (each of them in turn). See tests/clickhouse_engine.py."""

from clickhouse_engine import _chdb_engine_folder, any_clickhouse, clickhouse, clickhouse_server

__all__ = ["_chdb_engine_folder", "any_clickhouse", "clickhouse", "clickhouse_server"]
