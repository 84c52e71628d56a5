"""Text sorts as the embedded store sorts it (by code point, as SQLite and Python do), whatever collation
the database was created with: a database in an ICU English locale puts 'GPU-a' among the lower case."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from airlock.store.energy import Reading
from airlock.store.postgres import PostgresState
from airlock.store.replay import NewReplayRun

NAMES = ["gpu-b", "GPU-a", "gpu-a", "_x", "Z9", "é"]


@pytest.fixture
def english_dsn(postgres_dsn: str) -> Iterator[str]:
    name = f"airlock_test_en_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(
            f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
            " LOCALE 'C.UTF-8'"
        )
    dsn = postgres_dsn.replace(postgres_dsn.split("dbname=")[-1].split()[0], name)
    with psycopg.connect(dsn) as conn:  # the locale does sort differently from code points
        sorted_there = conn.execute("SELECT x FROM unnest(%s::text[]) x ORDER BY x", (NAMES,)).fetchall()
    assert [x for (x,) in sorted_there] != sorted(NAMES)
    yield dsn
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_keys_sort_by_code_point_in_any_locale(english_dsn: str) -> None:
    state = PostgresState(english_dsn)
    readings, runs = state.energy_readings(), state.replay_runs()
    try:
        readings.add([Reading(d, 1, 1) for d in NAMES], "push")
        assert readings.devices() == sorted(NAMES)
        runs.create(NewReplayRun("r", "c", {}, {}, NAMES))
        assert [i.trace_id for i in runs.items("r")] == sorted(NAMES) == runs.unfinished("r")
    finally:
        readings.close()
        runs.close()
