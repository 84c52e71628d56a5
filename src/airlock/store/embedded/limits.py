"""Rate buckets, budget counters and idempotency keys in the embedded state database (tables
rate_buckets, budget_counters, idempotency_keys). Each operation is one BEGIN IMMEDIATE transaction,
so every process sharing the data directory sees one bucket, one counter and one key. sqlite3
failures leave here as errors.StoreUnavailable (StoreConflict for completing a key not in progress).

The GCRA arithmetic is here in Python (`gcra_take`, `gcra_correct`, in whole microseconds); the Redis
backend's Lua scripts do the same sums in the same order, and the contract suite holds both to the
same answers.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from airlock.errors import StoreConflict, StoreUnavailable
from airlock.store.embedded.state import SQLiteState
from airlock.store.limits import (
    BucketAnswer,
    BudgetAnswer,
    Claim,
    check_bucket,
    check_window,
    emission_us,
    micros,
    window_start,
)

# Every this many writes an instance sweeps rows that no longer say anything (full buckets, ended
# windows, expired keys), so that keys used once do not pile up.
_SWEEP_EVERY = 512


@dataclass(frozen=True)
class BucketStep:
    """One GCRA step: the answer, and the TAT to store in microseconds (None: leave the stored one)."""

    answer: BucketAnswer
    tat_us: int | None


def _answer(allowed: bool, tat_us: int, now_us: int, emission: int, burst: int, wait_us: int) -> BucketAnswer:
    ahead = max(tat_us - now_us, 0)
    remaining = max((burst * emission - ahead) // emission, 0)
    return BucketAnswer(allowed, int(remaining), max(wait_us, 0) / 1e6, ahead / 1e6)


def gcra_take(stored_tat_us: int | None, now_us: int, rate_per_s: float, burst: int, cost: float) -> BucketStep:
    """Admit `cost` tokens if the bucket (TAT `stored_tat_us`, None for a full one) holds them at `now_us`."""
    emission = emission_us(rate_per_s)
    tat = now_us if stored_tat_us is None else max(stored_tat_us, now_us)
    new_tat = tat + math.floor(cost * emission + 0.5)
    allow_at = new_tat - burst * emission
    if allow_at <= now_us:
        return BucketStep(_answer(True, new_tat, now_us, emission, burst, 0), new_tat if new_tat != tat else None)
    return BucketStep(_answer(False, tat, now_us, emission, burst, allow_at - now_us), None)


def gcra_correct(stored_tat_us: int | None, now_us: int, rate_per_s: float, burst: int, delta: float) -> BucketStep:
    """Move the bucket's TAT by `delta` tokens (charge > 0, refund < 0, never beyond a full bucket)."""
    emission = emission_us(rate_per_s)
    tat = now_us if stored_tat_us is None else max(stored_tat_us, now_us)
    tat = max(tat + math.floor(delta * emission + 0.5), now_us)
    next_at = tat + emission - burst * emission
    allowed = next_at <= now_us
    return BucketStep(_answer(allowed, tat, now_us, emission, burst, next_at - now_us), tat)


class SQLiteLimits:
    """RateBuckets, BudgetCounters and IdempotencyKeys on one connection to the state database. The
    threads of a process may share an instance (each call holds a lock for its transaction); other
    processes open their own on the same file and SQLite's write lock orders them."""

    def __init__(self, state_db: Path) -> None:
        self.state_db = state_db
        self._lock = threading.Lock()
        self._writes = 0
        try:
            self._state = SQLiteState(state_db)
        except (sqlite3.Error, OSError) as e:
            raise StoreUnavailable(f"opening the state database {state_db}: {type(e).__name__}: {e}") from e
        self._conn = self._state.conn

    def close(self) -> None:
        with self._lock:
            self._state.close()

    @contextmanager
    def _transaction(self, what: str, now: float | None) -> Iterator[tuple[sqlite3.Connection, float]]:
        """One BEGIN IMMEDIATE transaction and the moment it runs at (`now`, or the clock read once the
        write lock is held, so that moments follow the order of the writes), committed when the block
        ends, rolled back if it raises."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    at = time.time() if now is None else now
                    yield conn, at
                    self._writes += 1
                    if self._writes % _SWEEP_EVERY == 0:
                        self._sweep(conn, at)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise StoreUnavailable(f"{what} in {self.state_db}: sqlite3: {type(e).__name__}: {e}") from e

    @staticmethod
    def _sweep(conn: sqlite3.Connection, now: float) -> None:
        conn.execute("DELETE FROM rate_buckets WHERE tat_us <= ?", (micros(now),))
        conn.execute("DELETE FROM budget_counters WHERE window_start + window_s <= ?", (now,))
        conn.execute("DELETE FROM idempotency_keys WHERE expires_at <= ?", (now,))

    # RateBuckets

    def take(self, key: str, rate_per_s: float, burst: int, cost: float = 1, now: float | None = None) -> BucketAnswer:
        check_bucket(rate_per_s, burst, cost)
        with self._transaction(f"taking from rate bucket {key!r}", now) as (conn, at_s):
            at = micros(at_s)
            step = gcra_take(self._tat(conn, key), at, rate_per_s, burst, cost)
            self._store_tat(conn, key, step.tat_us)
        return step.answer

    def correct(self, key: str, rate_per_s: float, burst: int, delta: float, now: float | None = None) -> BucketAnswer:
        check_bucket(rate_per_s, burst, 0)
        with self._transaction(f"correcting rate bucket {key!r}", now) as (conn, at_s):
            at = micros(at_s)
            step = gcra_correct(self._tat(conn, key), at, rate_per_s, burst, delta)
            self._store_tat(conn, key, step.tat_us)
        return step.answer

    @staticmethod
    def _tat(conn: sqlite3.Connection, key: str) -> int | None:
        row = conn.execute("SELECT tat_us FROM rate_buckets WHERE key = ?", (key,)).fetchone()
        return None if row is None else int(row[0])

    @staticmethod
    def _store_tat(conn: sqlite3.Connection, key: str, tat_us: int | None) -> None:
        if tat_us is not None:
            conn.execute(
                "INSERT INTO rate_buckets(key, tat_us) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET tat_us = excluded.tat_us",
                (key, tat_us),
            )

    # BudgetCounters

    def add(
        self, key: str, amount: float, limit: float | None, window_s: float, now: float | None = None
    ) -> BudgetAnswer:
        check_window(window_s)
        with self._transaction(f"adding to budget counter {key!r}", now) as (conn, at):
            start = window_start(at, window_s)
            total = self._window_total(conn, key, window_s, start)
            allowed = limit is None or amount <= 0 or total + amount <= limit
            if allowed:
                total += amount
                conn.execute(
                    "INSERT INTO budget_counters(key, window_s, window_start, total) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT(key, window_s, window_start) DO UPDATE SET total = excluded.total",
                    (key, window_s, start, total),
                )
        return BudgetAnswer(allowed, total, start + window_s - at)

    def total(self, key: str, window_s: float, now: float | None = None) -> float:
        check_window(window_s)
        with self._transaction(f"reading budget counter {key!r}", now) as (conn, at):
            return self._window_total(conn, key, window_s, window_start(at, window_s))

    @staticmethod
    def _window_total(conn: sqlite3.Connection, key: str, window_s: float, start: float) -> float:
        row = conn.execute(
            "SELECT total FROM budget_counters WHERE key = ? AND window_s = ? AND window_start = ?",
            (key, window_s, start),
        ).fetchone()
        return 0.0 if row is None else float(row[0])

    # IdempotencyKeys

    def claim(self, scope: str, key: str, request_sha: str, ttl_s: float, now: float | None = None) -> Claim:
        with self._transaction(f"claiming idempotency key {key!r} of {scope!r}", now) as (conn, at):
            row = conn.execute(
                "SELECT request_sha, state, response, expires_at FROM idempotency_keys WHERE scope = ? AND key = ?",
                (scope, key),
            ).fetchone()
            if row is not None and (row[3] is None or float(row[3]) > at):
                if row[0] != request_sha:
                    return Claim("mismatch")
                if row[1] == "completed":
                    return Claim("completed", bytes(row[2]) if row[2] is not None else b"")
                return Claim("in_progress")
            conn.execute(
                "INSERT INTO idempotency_keys(scope, key, request_sha, response, state, expires_at)"
                " VALUES (?, ?, ?, NULL, 'in_progress', ?) ON CONFLICT(scope, key) DO UPDATE SET"
                " request_sha = excluded.request_sha, response = NULL, state = 'in_progress',"
                " expires_at = excluded.expires_at, created_at = CURRENT_TIMESTAMP",
                (scope, key, request_sha, at + ttl_s),
            )
        return Claim("new")

    def complete(self, scope: str, key: str, response: bytes, now: float | None = None) -> None:
        with self._transaction(f"completing idempotency key {key!r} of {scope!r}", now) as (conn, at):
            done = conn.execute(
                "UPDATE idempotency_keys SET state = 'completed', response = ?"
                " WHERE scope = ? AND key = ? AND state = 'in_progress' AND (expires_at IS NULL OR expires_at > ?)",
                (response, scope, key, at),
            ).rowcount
        if done != 1:
            raise StoreConflict(f"idempotency key {key!r} of {scope!r} is not in progress: nothing to complete")

    def release(self, scope: str, key: str, now: float | None = None) -> None:
        with self._transaction(f"releasing idempotency key {key!r} of {scope!r}", now) as (conn, _):
            conn.execute(
                "DELETE FROM idempotency_keys WHERE scope = ? AND key = ? AND state = 'in_progress'", (scope, key)
            )
