"""Fixtures for the ClickHouse backend's tests (see tests/clickhouse_engine.py): `clickhouse` (a fresh
migrated database per test, on AIRLOCK_TEST_CLICKHOUSE_URL's server when set, else chdb in process),
`chdb_clickhouse`, `clickhouse_server` and `any_clickhouse`."""

from clickhouse_engine import _chdb_engine_folder, any_clickhouse, chdb_clickhouse, clickhouse, clickhouse_server

__all__ = ["_chdb_engine_folder", "any_clickhouse", "chdb_clickhouse", "clickhouse", "clickhouse_server"]
