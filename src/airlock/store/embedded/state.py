"""Control-plane state in SQLite (WAL mode), with append-only migrations numbered per concern."""

from __future__ import annotations

import sqlite3
import time
from importlib import resources
from pathlib import Path

# The migrations folder holds one folder per concern, each numbered on its own (ledger/0001_items.sql,
# replay/0002_claims.sql, ...), so that concerns grow apart without renumbering each other. A database
# made before that kept one global number; each of those numbers stands for these (concern, version).
_GLOBAL_VERSIONS: dict[int, list[tuple[str, int]]] = {
    1: [("nodes", 1)],
    2: [("idempotency", 1)],
    3: [("replay", 1)],
    4: [("ledger", 1), ("energy", 1)],
    5: [("sampling", 1)],
    6: [("export", 1)],
    7: [("replay", 2)],
}


def _migrations() -> list[tuple[str, int, str, str]]:
    """(concern, version, file name, SQL), in the order to apply them: by concern, then by version."""
    root = resources.files("airlock.store.embedded") / "migrations"
    out = []
    for folder in root.iterdir():
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            name = entry.name
            if name.endswith(".sql") and name[:4].isdigit():
                out.append((folder.name, int(name[:4]), f"{folder.name}/{name}", entry.read_text(encoding="utf-8")))
    return sorted(out)


def _enter_wal(conn: sqlite3.Connection, deadline_s: float = 10.0) -> None:
    """Switch the file to WAL. Changing the journal mode of a new file needs it alone, and SQLite
    answers "database is locked" at once, without its busy handler, while another process opens the
    same new file; so wait here, up to the same ten seconds the busy timeout allows."""
    give_up = time.monotonic() + deadline_s
    pause = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if ("locked" not in str(e) and "busy" not in str(e)) or time.monotonic() >= give_up:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)


class SQLiteState:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA busy_timeout=10000")
        _enter_wal(self.conn)
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.migrate()

    def migrate(self) -> None:
        """Apply every migration not yet applied, each in its own transaction; safe against another
        process migrating the same file at once (the second one finds the row and skips)."""
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (concern TEXT NOT NULL, version INTEGER NOT NULL,"
            " name TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,"
            " PRIMARY KEY (concern, version))"
        )
        self._adopt_global_numbers()
        done = set(self.conn.execute("SELECT concern, version FROM schema_migrations"))
        for concern, version, name, sql in _migrations():
            if (concern, version) in done:
                continue
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                applied = "SELECT 1 FROM schema_migrations WHERE concern = ? AND version = ?"
                if self.conn.execute(applied, (concern, version)).fetchone():
                    self.conn.execute("ROLLBACK")
                    continue
                for statement in sql.split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                self.conn.execute(
                    "INSERT INTO schema_migrations(concern, version, name) VALUES (?, ?, ?)", (concern, version, name)
                )
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def _adopt_global_numbers(self) -> None:
        """A database migrated under the single global numbering has schema_migrations(version, name):
        rewrite it, in one transaction, as the (concern, version) rows those versions stand for."""
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(schema_migrations)")}
        if "concern" in columns:
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            columns = {row[1] for row in self.conn.execute("PRAGMA table_info(schema_migrations)")}
            if "concern" not in columns:  # another process may have done it while we waited
                old = [int(v) for (v,) in self.conn.execute("SELECT version FROM schema_migrations")]
                self.conn.execute("ALTER TABLE schema_migrations RENAME TO schema_migrations_global")
                self.conn.execute(
                    "CREATE TABLE schema_migrations (concern TEXT NOT NULL, version INTEGER NOT NULL,"
                    " name TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,"
                    " PRIMARY KEY (concern, version))"
                )
                for v in old:
                    for concern, version in _GLOBAL_VERSIONS.get(v, []):
                        self.conn.execute(
                            "INSERT OR IGNORE INTO schema_migrations(concern, version, name) VALUES (?, ?, ?)",
                            (concern, version, f"global {v:04d}"),
                        )
                self.conn.execute("DROP TABLE schema_migrations_global")
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def versions(self) -> dict[str, int]:
        """The newest applied migration of each concern."""
        rows = self.conn.execute("SELECT concern, MAX(version) FROM schema_migrations GROUP BY concern")
        return {str(c): int(v) for c, v in rows}

    def schema_version(self) -> int:
        """How many migrations have been applied, over every concern."""
        return int(self.conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0])

    def close(self) -> None:
        self.conn.close()
