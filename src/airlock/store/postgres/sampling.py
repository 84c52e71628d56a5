"""The sampler's control-plane state on PostgreSQL, behaving as the embedded SQLiteSamplingState and
FileSamplerLock: `PostgresSamplingState` (tables sampling_cursor, sampling_pending, sampling_passes,
sampling_model) and `PostgresSamplerLock`, a session advisory lock held by a connection of its own, which
the server lets go when the process (or its connection) ends."""

from __future__ import annotations

from typing import Any

import orjson
import psycopg
from psycopg.rows import TupleRow

from airlock.errors import StoreConflict
from airlock.store.postgres.connection import PostgresPool, open_connection
from airlock.store.postgres.failures import postgres_failure
from airlock.store.sampling import PassCommit, StateSummary

# The advisory lock key of the sampler ('airlock' as ASCII, then 2); the migrations take ...01.
SAMPLER_LOCK_KEY = 0x61_69_72_6C_6F_63_6B_02


class PostgresSamplingState:
    def __init__(self, dsn: str) -> None:
        self.pool = PostgresPool(dsn, max_idle=1)

    def close(self) -> None:
        self.pool.close()

    def cursors(self) -> dict[str, int]:
        with self.pool.connection("reading the sampler's cursor") as conn:
            rows = conn.execute("SELECT writer, through_seq FROM sampling_cursor").fetchall()
        return {str(w): int(s) for w, s in rows}

    def decided_through(self, writer_id: str) -> int:
        with self.pool.connection("reading the sampler's cursor") as conn:
            row = conn.execute("SELECT decided_seq FROM sampling_cursor WHERE writer = %s", (writer_id,)).fetchone()
        return int(row[0]) if row else -1

    def last_pass(self) -> int:
        with self.pool.connection("reading the sampler's pass log") as conn:
            row = conn.execute("SELECT coalesce(max(pass), 0) FROM sampling_passes").fetchone()
        return int(row[0]) if row else 0

    def model(self) -> dict[str, Any] | None:
        with self.pool.connection("reading the sampler's model") as conn:
            row = conn.execute("SELECT model FROM sampling_model WHERE id = 1").fetchone()
        return orjson.loads(row[0]) if row else None

    def pending(self) -> list[list[Any]]:
        with self.pool.connection("reading the sampler's waiting traces") as conn:
            rows = conn.execute("SELECT state FROM sampling_pending").fetchall()
        return [orjson.loads(s) for (s,) in rows]

    def summary(self) -> StateSummary:
        # One REPEATABLE READ transaction: the pass log, the waiting traces and the model of one commit.
        with self.pool.transaction("reading the sampler's state") as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            passes_row = conn.execute(
                "SELECT count(*), max(at_ns), coalesce(sum(skipped), 0) FROM sampling_passes"
            ).fetchone()
            pending_row = conn.execute("SELECT count(*) FROM sampling_pending").fetchone()
            model_row = conn.execute("SELECT model FROM sampling_model WHERE id = 1").fetchone()
        assert passes_row is not None and pending_row is not None  # aggregates always answer one row
        passes, last, skipped = passes_row
        return StateSummary(
            passes=int(passes),
            last_pass_ns=None if last is None else int(last),
            skipped=int(skipped),
            pending=int(pending_row[0]),
            model=orjson.loads(model_row[0]) if model_row else None,
        )

    def commit(self, change: PassCommit) -> None:
        """Everything a pass changed, in one transaction. Committers take turns on the pass log's lock, so
        the check that this pass follows the last committed one and the writes are one step."""
        with self.pool.transaction(f"committing sampling pass {change.pass_no}") as conn:
            conn.execute("LOCK TABLE sampling_passes IN SHARE ROW EXCLUSIVE MODE")
            row = conn.execute("SELECT coalesce(max(pass), 0) FROM sampling_passes").fetchone()
            last = int(row[0]) if row else 0
            if last != change.pass_no - 1:
                raise StoreConflict(
                    f"sampling pass {change.pass_no} was begun after pass {change.pass_no - 1}, but pass {last} "
                    "is committed: another process ran the sampler"
                )
            waiting = change.waiting
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO sampling_cursor(writer, through_seq, decided_seq) VALUES (%s, %s, %s)"
                    " ON CONFLICT (writer) DO UPDATE SET through_seq = excluded.through_seq,"
                    " decided_seq = excluded.decided_seq",
                    [
                        (w, through, min(through, waiting.get(w, through + 1) - 1))
                        for w, through in change.cursors.items()
                    ],
                )
                removed = list(change.removed)
                if removed:
                    cur.execute("DELETE FROM sampling_pending WHERE trace_id = ANY(%s)", (removed,))
                cur.executemany(
                    "INSERT INTO sampling_pending(trace_id, state) VALUES (%s, %s)"
                    " ON CONFLICT (trace_id) DO UPDATE SET state = excluded.state",
                    [(t, orjson.dumps(state).decode()) for t, state in change.changed.items()],
                )
            conn.execute(
                "INSERT INTO sampling_model(id, pass, model) VALUES (1, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET pass = excluded.pass, model = excluded.model",
                (change.pass_no, orjson.dumps(change.model).decode()),
            )
            stats = change.stats
            conn.execute(
                "INSERT INTO sampling_passes(pass, at_ns, spans_read, decided, kept, pending, skipped)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    change.pass_no,
                    change.at_ns,
                    stats["spans_read"],
                    stats["decided"],
                    stats["kept"],
                    stats["pending"],
                    stats["skipped"],
                ),
            )


class PostgresSamplerLock:
    """The sampler lock: a session advisory lock on SAMPLER_LOCK_KEY, held by this connection alone."""

    def __init__(self, conn: psycopg.Connection[TupleRow]) -> None:
        self._conn: psycopg.Connection[TupleRow] | None = conn

    @classmethod
    def take(cls, dsn: str) -> PostgresSamplerLock | None:
        """The lock, or None if another process (or another connection of this one) holds it."""
        conn = open_connection(dsn, "taking the sampler lock")
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (SAMPLER_LOCK_KEY,)).fetchone()
        except psycopg.Error as e:
            conn.close()
            raise postgres_failure(e, "taking the sampler lock") from e
        if not (row and row[0]):
            conn.close()
            return None
        return cls(conn)

    def release(self) -> None:
        """Let the lock go (closing its connection ends the session, and the lock with it)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()
