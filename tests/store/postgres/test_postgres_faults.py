"""A PostgreSQL that goes away: every repository answers the next call with StoreUnavailable (never a
psycopg error), and works again on the call after, on a new connection. A server that cannot be reached,
or a DSN that does not parse, is StoreUnavailable too, without repeating the DSN."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from airlock.errors import StoreConflict, StoreError, StoreUnavailable
from airlock.store.energy import Reading
from airlock.store.export import Cursor, CursorMove
from airlock.store.ledger import LedgerItemRecord
from airlock.store.postgres import PostgresState
from airlock.store.postgres.ledger import PostgresLedgerItems
from airlock.store.replay import NewReplayRun
from airlock.store.sampling import PassCommit


def terminate_others(dsn: str) -> int:
    """Terminate every other backend of the test's database, waiting until each is gone."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def item(item_id: str) -> LedgerItemRecord:
    return LedgerItemRecord("acme", item_id, "tool", 0.5, 10, "sha")


def pass_commit(n: int) -> PassCommit:
    stats = {"spans_read": 1, "decided": 1, "kept": 1, "pending": 0, "skipped": 0}
    return PassCommit(n, n, {"w": n}, {}, {}, (), {"n": n}, stats)


# Per repository: how to open it, a call (numbered) made before and after the outage, and what the
# call answers the first time and the second (on a new connection, as on a fresh repository).
Open = Callable[[PostgresState], Any]
Call = Callable[[Any, int], Any]
CASES: dict[str, tuple[Open, Call, Any, Any]] = {
    "ledger": (
        lambda s: s.ledger_items(),
        lambda r, n: (r.insert_all([item(f"i{n}")]), len(r.in_window(0, 99))),
        ([True], 1),
        ([True], 2),
    ),
    "energy": (
        lambda s: s.energy_readings(),
        lambda r, n: (r.add([Reading("g", n, n)], "push"), len(r.of("g"))),
        (1, 1),
        (1, 2),
    ),
    "replay": (
        lambda s: s.replay_runs(),
        lambda r, n: (r.create(NewReplayRun(f"r{n}", "c", {}, {}, ["t"])), r.claim(f"r{n}", "a", None)),
        (None, True),
        (None, True),
    ),
    "export": (
        lambda s: s.export_cursors(),
        lambda r, n: (r.advance({f"w{n}": CursorMove(None, Cursor(n))}), len(r.load())),
        (None, 1),
        (None, 2),
    ),
    "sampling": (
        lambda s: s.sampling_state(),
        lambda r, n: (r.commit(pass_commit(n)), r.summary().passes),
        (None, 1),
        (None, 2),
    ),
    "nodes": (lambda s: s.writer_registry(), lambda r, n: r.register_writer(f"w{n}", "node", "eu", n), None, None),
}


@pytest.mark.parametrize("concern", sorted(CASES))
def test_a_dropped_connection_is_store_unavailable_once_then_reconnected(postgres_dsn: str, concern: str) -> None:
    open_repo, call, answer_before, answer_after = CASES[concern]
    repo = open_repo(PostgresState(postgres_dsn))
    try:
        assert call(repo, 1) == answer_before
        assert terminate_others(postgres_dsn) >= 1  # the repository's idle connection
        with pytest.raises(StoreUnavailable) as gone:
            call(repo, 2)
        assert isinstance(gone.value.__cause__, psycopg.OperationalError)  # translated, not leaked
        assert call(repo, 2) == answer_after  # the same call again works, on a new connection
    finally:
        repo.close()


def test_after_an_outage_one_call_fails_however_many_connections_were_idle(postgres_dsn: str) -> None:
    items = PostgresState(postgres_dsn).ledger_items()
    try:
        gate = threading.Barrier(4)

        def busy() -> None:  # four calls at once leave four idle connections in the pool
            gate.wait()
            items.in_window(0, 1)

        threads = [threading.Thread(target=busy) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert terminate_others(postgres_dsn) >= 2
        with pytest.raises(StoreUnavailable):
            items.in_window(0, 1)
        for n in range(4):  # the other idle connections went with the first: none fails again
            assert items.insert_all([item(f"after{n}")]) == [True]
    finally:
        items.close()


def test_a_connection_dropped_inside_a_transaction_stores_nothing(postgres_dsn: str) -> None:
    items = PostgresState(postgres_dsn).ledger_items()
    admin = psycopg.connect(postgres_dsn)
    try:
        items.insert_all([item("before")])
        admin.execute("LOCK TABLE ledger_items IN ACCESS EXCLUSIVE MODE")  # the next insert waits on it
        outcome: list[BaseException] = []

        def insert() -> None:
            try:
                items.insert_all([item("during")])
            except BaseException as e:
                outcome.append(e)

        inserting = threading.Thread(target=insert)
        inserting.start()
        with psycopg.connect(postgres_dsn, autocommit=True) as killer:
            for _ in range(200):  # until the insert is waiting on the lock
                waiting = killer.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
                ).fetchall()
                if waiting:
                    break
                threading.Event().wait(0.01)
            assert waiting
            killer.execute("SELECT pg_terminate_backend(%s, 5000)", (waiting[0][0],))
        inserting.join(10)
        admin.rollback()
        assert len(outcome) == 1 and type(outcome[0]) is StoreUnavailable, outcome
        assert [i.item_id for i in items.in_window(0, 99)] == ["before"]
        assert items.insert_all([item("during")]) == [True]
    finally:
        admin.close()
        items.close()


def test_the_sampler_lock_goes_with_its_connection(postgres_dsn: str) -> None:
    state = PostgresState(postgres_dsn)
    lock = state.take_sampler_lock()
    assert lock is not None and state.take_sampler_lock() is None
    terminate_others(postgres_dsn)  # as when the holding process dies: the server lets the lock go
    other = state.take_sampler_lock()
    assert other is not None
    lock.release()  # releasing a lock whose connection is gone raises nothing
    assert state.take_sampler_lock() is None  # and does not let go of the other's
    other.release()


def test_a_server_that_cannot_be_reached_is_store_unavailable(tmp_path: Any) -> None:
    dsn = f"host={tmp_path} dbname=airlock user=airlock password=hunter2 connect_timeout=2"
    with pytest.raises(StoreUnavailable) as opening:
        PostgresState(dsn)
    assert "hunter2" not in str(opening.value) and opening.value.status == 503
    items = PostgresLedgerItems(dsn)  # a repository connects on its first call
    with pytest.raises(StoreUnavailable, match="reading ledger items"):
        items.in_window(0, 1)
    items.close()
    with pytest.raises(StoreUnavailable):
        PostgresState(dsn).take_sampler_lock()


@pytest.mark.parametrize("dsn", ["host=x password=hunter2 ===", "postgresql://u:hunter2@[bad/x", "nosuch=hunter2"])
def test_a_dsn_that_does_not_parse_is_store_unavailable_and_not_repeated(dsn: str) -> None:
    with pytest.raises(StoreUnavailable) as refused:
        PostgresState(dsn)
    assert "hunter2" not in str(refused.value)


def test_a_closed_repository_refuses_calls(postgres_dsn: str) -> None:
    items = PostgresState(postgres_dsn).ledger_items()
    items.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        items.in_window(0, 1)


def test_bad_values_are_store_errors_not_psycopg_errors(postgres_dsn: str) -> None:
    state = PostgresState(postgres_dsn)
    items, readings, writers = state.ledger_items(), state.energy_readings(), state.writer_registry()
    try:
        with pytest.raises(StoreError):  # PostgreSQL text holds no NUL
            items.insert_all([item("nul\x00id")])
        with pytest.raises(StoreError):  # past a 64-bit integer
            readings.add([Reading("g", 2**64, 1)], "push")
        writers.register_writer("w", "n", "eu", 1)
        with pytest.raises(StoreConflict):
            writers.register_writer("w", "n", "eu", 1)
        assert items.insert_all([item("fine")]) == [True]  # each still works after
    finally:
        items.close()
        readings.close()
        writers.close()


def test_a_killed_samplers_lock_is_let_go(postgres_dsn: str) -> None:
    state = PostgresState(postgres_dsn)
    script = (
        "import sys\n"
        "from airlock.store.postgres.sampling import PostgresSamplerLock\n"
        "lock = PostgresSamplerLock.take(sys.argv[1])\n"
        "print('held' if lock else 'busy', flush=True)\n"
        "sys.stdin.read()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3] / "src")}
    holder = subprocess.Popen(
        [sys.executable, "-c", script, postgres_dsn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert state.take_sampler_lock() is None
        holder.kill()
        holder.wait(10)
        deadline = time.monotonic() + 10
        taken = state.take_sampler_lock()
        while taken is None and time.monotonic() < deadline:  # the server notices the session gone
            time.sleep(0.02)
            taken = state.take_sampler_lock()
        assert taken is not None
        taken.release()
    finally:
        holder.kill()
        holder.wait(10)
        if holder.stdin is not None:
            holder.stdin.close()
        if holder.stdout is not None:
            holder.stdout.close()
