"""The embedded state database's migrations: one folder per concern, numbered per concern."""

from __future__ import annotations

import sqlite3
import threading
from importlib import resources
from pathlib import Path

from airlock.store.embedded.state import SQLiteState


def _sql(relpath: str) -> str:
    return (resources.files("airlock.store.embedded") / "migrations" / relpath).read_text(encoding="utf-8")


def test_a_new_database_gets_every_concern_at_its_newest_version(tmp_path: Path) -> None:
    state = SQLiteState(tmp_path / "state.sqlite3")
    try:
        versions = state.versions()
        assert versions["replay"] == 2 and versions["ledger"] == 1 and versions["energy"] == 1
        assert set(versions) >= {"nodes", "idempotency", "replay", "ledger", "energy", "sampling", "export"}
        tables = {r[0] for r in state.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"writers", "replay_runs", "ledger_items", "energy_readings", "otlp_export_cursor"} <= tables
    finally:
        state.close()
    again = SQLiteState(tmp_path / "state.sqlite3")  # opening again applies nothing twice
    assert again.versions() == versions
    again.close()


def test_a_database_of_the_single_global_numbering_is_adopted_and_brought_forward(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    old = sqlite3.connect(path, isolation_level=None)
    for relpath in ("nodes/0001_writers.sql", "idempotency/0001_keys.sql", "replay/0001_runs.sql",
                    "ledger/0001_items.sql", "energy/0001_readings.sql", "sampling/0001_state.sql",
                    "export/0001_cursors.sql"):  # fmt: skip
        old.executescript(_sql(relpath))
    old.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)")  # fmt: skip
    old.executemany(
        "INSERT INTO schema_migrations(version, name) VALUES (?, ?)", [(v, f"{v:04d}") for v in range(1, 7)]
    )
    old.execute("INSERT INTO ledger_items(tenant, item_id, category, amount_usd, occurred_ns, request_sha)"
                " VALUES ('acme', 'i1', 'tool', 1.5, 1, 'x')")  # fmt: skip
    old.close()
    state = SQLiteState(path)  # would fail re-creating tables if it did not know what was applied
    try:
        assert state.versions()["replay"] == 2  # the one migration newer than the old numbering ran
        columns = {r[1] for r in state.conn.execute("PRAGMA table_info(replay_runs)")}
        assert {"claimed_by", "claimed_at"} <= columns
        assert state.conn.execute("SELECT amount_usd FROM ledger_items").fetchone()[0] == 1.5
    finally:
        state.close()


def test_two_processes_migrating_at_once_apply_each_migration_once(tmp_path: Path) -> None:
    # Opening a brand-new file from several connections at once used to fail about one time in
    # twenty with "database is locked" (the switch to WAL is not covered by the busy timeout), so
    # race on thirty fresh files.
    for round_ in range(30):
        path = tmp_path / f"state-{round_}.sqlite3"
        errors: list[BaseException] = []

        def open_it(path: Path = path, errors: list[BaseException] = errors) -> None:
            try:
                SQLiteState(path).close()
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        state = SQLiteState(path)
        rows = state.conn.execute("SELECT concern, version, count(*) FROM schema_migrations GROUP BY 1, 2").fetchall()
        state.close()
        assert rows and all(n == 1 for _, _, n in rows)
