"""Connections to PostgreSQL for the control-plane repositories: a small pool of autocommit connections,
each checked out for one operation (one statement, or one explicit transaction), so that a repository
is safe to call from several threads at once.

A connection the server dropped (restarted, or the backend terminated) fails the operation that finds it
with StoreUnavailable; the pool then forgets it and every idle connection opened before it (they went
with the same server), so the next operation connects afresh. No operation is retried behind the caller's
back: a write whose COMMIT was lost with the connection may or may not have been applied, and only the
caller knows whether doing it again is safe."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import psycopg.conninfo
from psycopg import pq
from psycopg.rows import TupleRow

from airlock.errors import StoreUnavailable
from airlock.store.postgres.failures import postgres_failure

CONNECT_TIMEOUT_S = 10  # how long opening a connection may take before the store is unavailable
MAX_IDLE = 4  # idle connections kept for the next operations; more are opened when threads need them


def connection_settings(dsn: str) -> dict[str, str]:
    """The DSN's parameters, with Airlock's defaults for what it leaves out. Raises StoreUnavailable for a
    DSN that does not parse (without repeating it: it may hold a password)."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error as e:
        raise StoreUnavailable(
            f"the PostgreSQL DSN is not a libpq connection string or URI ({type(e).__name__})"
        ) from e
    settings = {k: str(v) for k, v in params.items() if v is not None}
    settings.setdefault("connect_timeout", str(CONNECT_TIMEOUT_S))
    settings.setdefault("application_name", "airlock")
    # Over TCP, find a server that vanished without closing the connection (a host gone, a partition)
    # within about a minute instead of waiting on it for ever; libpq ignores these on a Unix socket.
    for key, value in (("keepalives", "1"), ("keepalives_idle", "30"), ("keepalives_interval", "10")):
        settings.setdefault(key, value)
    settings.setdefault("keepalives_count", "3")
    return settings


def open_connection(dsn: str, what: str) -> psycopg.Connection[TupleRow]:
    """A new autocommit connection whose explicit transactions are READ COMMITTED whatever the server's
    default (the repositories' compare-and-set statements are written for it); StoreUnavailable naming
    `what` when the server cannot be reached."""
    try:
        conn = psycopg.connect(psycopg.conninfo.make_conninfo(**connection_settings(dsn)), autocommit=True)
    except psycopg.Error as e:
        raise postgres_failure(e, what) from e
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
    return conn


class PostgresPool:
    """Autocommit connections to one database, opened on demand and kept (up to MAX_IDLE) between
    operations. `connection(what)` lends one for a block; `transaction(what)` lends one inside an explicit
    transaction, committed when the block ends and rolled back when it raises. psycopg's errors leave
    both as StoreError subclasses naming `what`; other exceptions (an ItemConflict the block raises)
    pass through, after the rollback."""

    def __init__(self, dsn: str, max_idle: int = MAX_IDLE) -> None:
        connection_settings(dsn)  # refuse a DSN that does not parse now, not at the first operation
        self._dsn = dsn
        self._max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: list[psycopg.Connection[TupleRow]] = []
        self._generation = 0  # bumped when the server is found gone: connections older than that are stale
        self._born: dict[int, int] = {}  # id(connection) -> the generation it was opened in
        self._closed = False
        self._pid = os.getpid()
        # Connections a forked child inherited: its parent's sessions, never used or closed here (closing
        # one would end the parent's session), only kept from the garbage collector, which would.
        self._inherited: list[psycopg.Connection[TupleRow]] = []

    def _take(self, what: str) -> psycopg.Connection[TupleRow]:
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"{what}: the PostgreSQL repository is closed")
            if os.getpid() != self._pid:
                self._pid = os.getpid()
                self._inherited.extend(self._idle)
                self._idle = []
                self._generation += 1
            if self._idle:
                return self._idle.pop()
            generation = self._generation
        conn = open_connection(self._dsn, what)
        with self._lock:
            self._born[id(conn)] = generation
        return conn

    def _give_back(self, conn: psycopg.Connection[TupleRow], failed: bool) -> None:
        reusable = not conn.closed and conn.info.transaction_status == pq.TransactionStatus.IDLE
        stale: list[psycopg.Connection[TupleRow]] = []
        with self._lock:
            if failed and conn.broken:  # the server went away: so did every connection opened before
                self._generation += 1
                stale, self._idle = self._idle, []
                reusable = False
            elif self._born.get(id(conn), -1) < self._generation:
                reusable = False
            if reusable and not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
            self._born.pop(id(conn), None)
            for old in stale:
                self._born.pop(id(old), None)
        for dropped in (conn, *stale):
            dropped.close()

    @contextmanager
    def connection(self, what: str) -> Iterator[psycopg.Connection[TupleRow]]:
        conn = self._take(what)
        failed = False
        try:
            yield conn
        except psycopg.Error as e:
            failed = True
            raise postgres_failure(e, what) from e
        except BaseException:
            failed = True
            raise
        finally:
            self._give_back(conn, failed)

    @contextmanager
    def transaction(self, what: str) -> Iterator[psycopg.Connection[TupleRow]]:
        with self.connection(what) as conn, conn.transaction():
            yield conn

    def close(self) -> None:
        """Close every idle connection; connections lent out now are closed when given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._born.clear()
        for conn in idle:
            conn.close()
