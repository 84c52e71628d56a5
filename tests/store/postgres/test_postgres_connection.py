"""The connection layer under the repositories: transactions READ COMMITTED whatever the database's
default, and a forked child never using (or ending) its parent's sessions."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psycopg
import pytest

from airlock.errors import StoreConflict, StoreUnavailable
from airlock.store.ledger import LedgerItemRecord
from airlock.store.postgres import PostgresState
from airlock.store.postgres.connection import PostgresPool


def post(repo: Any, items: list[LedgerItemRecord], gate: threading.Barrier, results: list[Any]) -> None:
    gate.wait()
    try:
        results.append(repo.insert_all(items))
    except BaseException as e:
        results.append(e)


def test_racing_posts_stay_idempotent_on_a_serializable_database(postgres_dsn: str) -> None:
    """Under a SERIALIZABLE default, the loser of two inserts of one id would fail to serialize (a 409 for
    a retried POST) instead of finding the winner's row: the pool asks for READ COMMITTED."""
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        name = admin.execute("SELECT current_database()").fetchone()
        assert name is not None
        admin.execute(f"ALTER DATABASE \"{name[0]}\" SET default_transaction_isolation = 'serializable'")
    state = PostgresState(postgres_dsn)
    first, second = state.ledger_items(), state.ledger_items()
    try:
        for round_no in range(10):
            batch = [LedgerItemRecord("acme", f"r{round_no}-{n}", "tool", 1.0, n, "sha") for n in range(6)]
            results: list[list[bool] | BaseException] = []
            gate = threading.Barrier(2)
            threads = [threading.Thread(target=post, args=(repo, batch, gate, results)) for repo in (first, second)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert all(isinstance(r, list) for r in results), results
            assert sorted(sum(r) for r in results) == [0, 6]  # type: ignore[arg-type]
    finally:
        first.close()
        second.close()


def test_a_forked_child_leaves_its_parents_sessions_alone(postgres_dsn: str) -> None:
    pool = PostgresPool(postgres_dsn)
    try:
        with pool.connection("before the fork") as conn:
            parent_pid = conn.info.backend_pid
        child = os.fork()
        if child == 0:  # the child: a session of its own, the parent's left as it was
            try:
                with pool.connection("in the child") as conn:
                    mine = conn.info.backend_pid
                os._exit(0 if mine != parent_pid else 3)
            except BaseException:
                os._exit(4)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        with pool.connection("after the fork") as conn:  # the parent's session still answers
            assert conn.info.backend_pid == parent_pid
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()


def test_psycopg_failures_leave_as_store_errors(postgres_dsn: str) -> None:
    """As store/embedded/failures.py for SQLite: a refused constraint or a transaction that lost a race
    (serialization failure, deadlock) is StoreConflict; anything else StoreUnavailable."""
    pool = PostgresPool(postgres_dsn)
    try:
        with pool.connection("setting up") as conn:
            conn.execute("CREATE TABLE t (k INT PRIMARY KEY, v INT NOT NULL)")
            conn.execute("INSERT INTO t VALUES (1, 0), (2, 0)")
        with (
            pytest.raises(StoreConflict, match=r"^inserting twice: duplicate key"),
            pool.connection("inserting twice") as c,
        ):
            c.execute("INSERT INTO t VALUES (1, 1)")
        with (
            pytest.raises(StoreUnavailable, match=r"^a bad query: PostgreSQL: UndefinedTable"),
            pool.connection("a bad query") as c,
        ):
            c.execute("SELECT * FROM no_such_table")
        assert lost_race(pool, "REPEATABLE READ", [(1, 1)], [(1, 2)])  # could not serialize access
        assert lost_race(pool, "READ COMMITTED", [(1, 1), (2, 1)], [(2, 2), (1, 2)])  # deadlock detected
    finally:
        pool.close()


def lost_race(pool: PostgresPool, isolation: str, first: list[tuple[int, int]], second: list[tuple[int, int]]) -> bool:
    """Two transactions updating rows in the orders given, each after the other has begun: True when
    exactly one of them was refused with StoreConflict and the other committed."""
    begun = threading.Barrier(2)
    outcome: list[BaseException | None] = []

    def run(updates: list[tuple[int, int]], delay: float) -> None:
        try:
            with pool.transaction(f"updating t ({isolation})") as conn:
                conn.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
                conn.execute("SELECT 1 FROM t")  # the snapshot is taken here
                if isolation == "READ COMMITTED":  # each takes its first row before the other goes on
                    conn.execute("UPDATE t SET v = v WHERE k = %s", (updates[0][0],))
                begun.wait(timeout=10)
                time.sleep(delay)
                for k, v in updates:
                    conn.execute("UPDATE t SET v = %s WHERE k = %s", (v, k))
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    threads = [threading.Thread(target=run, args=(first, 0.0)), threading.Thread(target=run, args=(second, 0.2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    conflicts = [o for o in outcome if isinstance(o, StoreConflict)]
    return len(conflicts) == 1 and outcome.count(None) == 1
