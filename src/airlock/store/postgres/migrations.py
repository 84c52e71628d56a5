"""Numbered migrations per concern (migrations/<concern>/NNNN_name.sql), applied once to a database that
several gateway replicas share: the migrator holds a session advisory lock while it applies them, so two
replicas starting at once take turns, and the second finds every migration recorded in
schema_migrations(concern, version) and applies nothing."""

from __future__ import annotations

from importlib import resources

import psycopg
from psycopg.rows import TupleRow

from airlock.store.postgres.connection import open_connection
from airlock.store.postgres.failures import postgres_failure

# The advisory lock key every Airlock process takes to migrate a database ('airlock' as ASCII, then 1).
MIGRATION_LOCK_KEY = 0x61_69_72_6C_6F_63_6B_01
LOCK_WAIT_S = 60  # how long a replica waits for another one's migrations before it gives up


def migration_files() -> list[tuple[str, int, str, str]]:
    """(concern, version, file name, SQL) of every migration shipped, by concern, then by version."""
    root = resources.files("airlock.store.postgres") / "migrations"
    out = []
    for folder in root.iterdir():
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            name = entry.name
            if name.endswith(".sql") and name[:4].isdigit():
                out.append((folder.name, int(name[:4]), f"{folder.name}/{name}", entry.read_text(encoding="utf-8")))
    return sorted(out)


def migrate(dsn: str) -> list[str]:
    """Apply every migration the database lacks, each in its own transaction with its schema_migrations
    row, under the migration lock. Returns the names of those applied now (empty when the database was
    up to date). Raises StoreUnavailable when the database cannot be reached or a migration fails (what
    it did is rolled back), or when another process held the lock for LOCK_WAIT_S."""
    conn = open_connection(dsn, "migrating the PostgreSQL state")
    try:
        return _migrate(conn)
    except psycopg.Error as e:
        raise postgres_failure(e, "migrating the PostgreSQL state") from e
    finally:
        conn.close()


def _migrate(conn: psycopg.Connection[TupleRow]) -> list[str]:
    conn.execute(f"SET lock_timeout = '{LOCK_WAIT_S}s'")
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    try:
        conn.execute("RESET lock_timeout")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (concern TEXT NOT NULL, version INTEGER NOT NULL,"
            " name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (concern, version))"
        )
        done = {(str(c), int(v)) for c, v in conn.execute("SELECT concern, version FROM schema_migrations")}
        applied = []
        for concern, version, name, sql in migration_files():
            if (concern, version) in done:
                continue
            with conn.transaction():
                conn.execute(sql.encode())  # no parameters: the file's statements go as one simple query
                conn.execute(
                    "INSERT INTO schema_migrations(concern, version, name) VALUES (%s, %s, %s)",
                    (concern, version, name),
                )
            applied.append(name)
        return applied
    finally:
        if not conn.broken:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


def versions(dsn: str) -> dict[str, int]:
    """The newest applied migration of each concern."""
    conn = open_connection(dsn, "reading the PostgreSQL schema version")
    try:
        rows = conn.execute("SELECT concern, max(version) FROM schema_migrations GROUP BY concern").fetchall()
    except psycopg.Error as e:
        raise postgres_failure(e, "reading the PostgreSQL schema version") from e
    finally:
        conn.close()
    return {str(c): int(v) for c, v in rows}
