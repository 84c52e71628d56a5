"""ExportCursorRepository on PostgreSQL (table otlp_export_cursor), behaving as the embedded
SQLiteExportCursors: a move is a conditional write per writer inside one transaction, so of two
exporters moving a cursor from the same position exactly one succeeds."""

from __future__ import annotations

from collections.abc import Mapping

from airlock.errors import StoreConflict
from airlock.store.export import Cursor, CursorMove
from airlock.store.postgres.connection import PostgresPool


class PostgresExportCursors:
    def __init__(self, dsn: str) -> None:
        self.pool = PostgresPool(dsn)

    def load(self) -> dict[str, Cursor]:
        with self.pool.connection("export cursors") as conn:
            rows = conn.execute("SELECT writer, seq_done, partial, partial_rows FROM otlp_export_cursor").fetchall()
        return {str(w): Cursor(int(seq), partial, int(n)) for w, seq, partial, n in rows}

    def advance(self, moves: Mapping[str, CursorMove]) -> None:
        if not moves:
            return
        with self.pool.transaction("export cursors") as conn:
            # Writers in name order, so that two movers of overlapping writers wait instead of deadlocking.
            # A mover that waited on another's row sees the row it left, and so no longer its `expected`.
            for writer in sorted(moves):
                move = moves[writer]
                to = move.to
                if move.expected is None:
                    cur = conn.execute(
                        "INSERT INTO otlp_export_cursor(writer, seq_done, partial, partial_rows)"
                        " VALUES (%s, %s, %s, %s) ON CONFLICT (writer) DO NOTHING",
                        (writer, to.seq_done, to.partial, to.partial_rows),
                    )
                else:
                    was = move.expected
                    cur = conn.execute(
                        "UPDATE otlp_export_cursor SET seq_done = %s, partial = %s, partial_rows = %s,"
                        " updated_at = now() WHERE writer = %s AND seq_done = %s"
                        " AND partial IS NOT DISTINCT FROM %s AND partial_rows = %s",
                        (to.seq_done, to.partial, to.partial_rows, writer, was.seq_done, was.partial, was.partial_rows),
                    )
                if cur.rowcount != 1:
                    raise StoreConflict(
                        f"the export cursor of writer {writer} was moved by another process", writer=writer
                    )

    def close(self) -> None:
        self.pool.close()
