"""Leader locks shared by every node on one PostgreSQL: a session advisory lock per name, held by a
connection of its own; the server lets it go when that connection ends (the holder died)."""

from __future__ import annotations

import hashlib

import psycopg
from psycopg.rows import TupleRow

from airlock.store.postgres.connection import open_connection
from airlock.store.postgres.failures import postgres_failure


def lock_key(name: str) -> int:
    """A signed 64-bit advisory-lock key for a name (kept apart from the sampler's fixed key by its prefix)."""
    return int.from_bytes(hashlib.sha256(b"airlock-leader:" + name.encode()).digest()[:8], "big", signed=True)


class PostgresLeaderLock:
    def __init__(self, conn: psycopg.Connection[TupleRow]) -> None:
        self._conn: psycopg.Connection[TupleRow] | None = conn

    @classmethod
    def take(cls, dsn: str, name: str) -> PostgresLeaderLock | None:
        """The lock named `name`, or None while another process holds it."""
        conn = open_connection(dsn, f"taking the {name} lock")
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(name),)).fetchone()
        except psycopg.Error as e:
            conn.close()
            raise postgres_failure(e, f"taking the {name} lock") from e
        if not (row and row[0]):
            conn.close()
            return None
        return cls(conn)

    def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()
