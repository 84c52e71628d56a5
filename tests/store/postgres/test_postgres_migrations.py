"""The PostgreSQL state's migrations: applied once per (concern, version) even when replicas start at
the same instant, recorded in schema_migrations, shipped in the wheel, and a failing one rolled back."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import psycopg
import pytest

from airlock.errors import StoreUnavailable
from airlock.store.postgres import PostgresState
from airlock.store.postgres.migrations import MIGRATION_LOCK_KEY, migrate, migration_files

ROOT = Path(__file__).resolve().parents[3]
CONCERNS = {"energy", "export", "ledger", "nodes", "replay", "sampling"}


def applied_rows(dsn: str) -> list[tuple[str, int]]:
    with psycopg.connect(dsn) as conn:
        return [(str(c), int(v)) for c, v in conn.execute("SELECT concern, version FROM schema_migrations")]


def test_every_concern_is_migrated_once(postgres_dsn: str) -> None:
    state = PostgresState(postgres_dsn)
    expected = {(concern, version) for concern, version, _, _ in migration_files()}
    assert {c for c, _ in expected} == CONCERNS
    assert sorted(state.applied) == sorted(name for _, _, name, _ in migration_files())
    assert state.versions() == {c: max(v for cc, v in expected if cc == c) for c in CONCERNS}
    assert PostgresState(postgres_dsn).applied == []  # a second opening applies nothing
    assert sorted(applied_rows(postgres_dsn)) == sorted(expected)


def test_replicas_starting_at_once_apply_each_migration_once(postgres_dsn: str) -> None:
    outcome: list[list[str]] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait()
        outcome.append(migrate(postgres_dsn))

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(o) for o in outcome) == [0, 0, 0, len(migration_files())]  # one applied them all
    assert len(applied_rows(postgres_dsn)) == len(migration_files())


def test_processes_starting_at_once_apply_each_migration_once(postgres_dsn: str) -> None:
    script = (
        "import sys, time\n"
        "from airlock.store.postgres.migrations import migrate\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "print(len(migrate(sys.argv[1])))\n"
    )
    start_at = str(time.time() + 1.0)  # both wait for the same instant after their imports
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, postgres_dsn, start_at], stdout=subprocess.PIPE, env=env)
        for _ in range(2)
    ]
    counts = sorted(int(p.communicate(timeout=60)[0]) for p in procs)
    assert [p.returncode for p in procs] == [0, 0]
    assert counts == [0, len(migration_files())]
    assert len(applied_rows(postgres_dsn)) == len(migration_files())


def test_a_replica_waits_for_the_one_migrating(postgres_dsn: str) -> None:
    holder = psycopg.connect(postgres_dsn, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        outcome: list[object] = []
        waiting = threading.Thread(target=lambda: outcome.append(migrate(postgres_dsn)))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and outcome == []  # it waits on the lock
        with psycopg.connect(postgres_dsn) as probe:
            tables = probe.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'schema_migrations'").fetchone()
        assert tables == (0,)  # and touched nothing yet
        holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
        waiting.join(30)
        assert outcome and len(outcome[0]) == len(migration_files())  # type: ignore[arg-type]
    finally:
        holder.close()


def test_the_wheel_ships_every_migration() -> None:
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = ROOT / "src" / "airlock"
    files = [p.relative_to(package).as_posix() for p in (package / "store" / "postgres" / "migrations").rglob("*")]
    sql = [f for f in files if f.endswith(".sql")]
    assert len(sql) == len(migration_files()) >= len(CONCERNS)
    assert all(any(fnmatch(f, pattern) for pattern in package_data["airlock"]) for f in sql)


def test_a_failing_migration_leaves_nothing_of_itself(postgres_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import airlock.store.postgres.migrations as migrations

    good = migration_files()
    broken = [*good, ("zz", 1, "zz/0001_broken.sql", "CREATE TABLE zz_half (a INT);\nSELECT no_such_function();")]
    monkeypatch.setattr(migrations, "migration_files", lambda: broken)
    with pytest.raises(StoreUnavailable, match="no_such_function"):
        migrate(postgres_dsn)
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT to_regclass('zz_half')").fetchone() == (None,)
        # the lock was given back: another migrator is not kept waiting
        assert conn.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATION_LOCK_KEY,)).fetchone() == (True,)
    assert len(applied_rows(postgres_dsn)) == len(good)  # those before it stay applied
