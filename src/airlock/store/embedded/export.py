"""The embedded export feed and cursor repository: span segments read with pyarrow, cursors in the
SQLite state database (table otlp_export_cursor).

The unit is the segment: a segment file never changes once written, so "rows sent of this file" is
exact. Compaction merges a writer's adjacent segments, and with tail sampling it also drops the rows
of dropped traces, so row positions do not survive it; a merged segment that holds both sent and unsent
segments (the exporter fell behind, the collector was down) is therefore sent whole again: at least
once, never a loss. Normally the exporter (every few seconds) is far ahead of compaction (which waits
for 16 segments of a second each)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pyarrow.parquet as pq

from airlock.errors import StoreConflict
from airlock.store.embedded.failures import store_errors
from airlock.store.embedded.layout import DataDir
from airlock.store.embedded.segments import Segment, live_segments
from airlock.store.embedded.state import SQLiteState
from airlock.store.export import Cursor, CursorMove, ExportBatch


class SegmentFeed:
    """ExportFeed over a data directory's live span segments."""

    def __init__(self, data: DataDir) -> None:
        self.data = data

    def next_batch(self, cursors: Mapping[str, Cursor], limit: int) -> ExportBatch:
        """A segment that vanishes mid-read (compacted) ends the batch early; the next call reads the
        merged segment."""
        with store_errors("export feed"):
            return self._next_batch(cursors, limit)

    def _next_batch(self, cursors: Mapping[str, Cursor], limit: int) -> ExportBatch:
        batch = ExportBatch()
        by_writer: dict[str, list[Segment]] = {}
        for seg in live_segments(self.data.spans):
            by_writer.setdefault(seg.writer, []).append(seg)
        taken = 0
        for writer, segments in sorted(by_writer.items()):
            at = cursors.get(writer, Cursor())
            for seg in segments:
                if seg.last <= at.seq_done:
                    continue
                skip = at.partial_rows if at.partial == seg.path.name else 0
                try:
                    total = pq.ParquetFile(seg.path).metadata.num_rows
                    want = min(total - skip, limit - taken)
                    table = pq.read_table(seg.path).slice(skip, want)
                except FileNotFoundError:
                    return batch
                if seg.first <= at.seq_done:
                    batch.resent += want  # merged with segments already sent: sent whole again
                batch.rows.extend(table.to_pylist())
                taken += want
                done = skip + want >= total
                at = Cursor(seg.last) if done else Cursor(at.seq_done, seg.path.name, skip + want)
                batch.since.setdefault(writer, cursors.get(writer))
                batch.advance[writer] = at
                if taken >= limit:
                    return batch
        return batch

    def ends(self) -> tuple[dict[str, Cursor], int]:
        with store_errors("export feed"):
            segments = live_segments(self.data.spans)
        ends: dict[str, Cursor] = {}
        for seg in segments:
            ends[seg.writer] = Cursor(max(seg.last, ends.get(seg.writer, Cursor()).seq_done))
        return ends, len(segments)


class SQLiteExportCursors:
    """ExportCursorRepository in the state database; a move is checked and written in one IMMEDIATE
    transaction, so two processes cannot both move a writer's cursor from the same position."""

    def __init__(self, state_db: Path) -> None:
        with store_errors("export cursors"):
            self.state = SQLiteState(state_db)

    def load(self) -> dict[str, Cursor]:
        with store_errors("export cursors"):
            rows = self.state.conn.execute("SELECT writer, seq_done, partial, partial_rows FROM otlp_export_cursor")
            return {w: Cursor(seq, partial, n) for w, seq, partial, n in rows.fetchall()}

    def advance(self, moves: Mapping[str, CursorMove]) -> None:
        if not moves:
            return
        conn = self.state.conn
        with store_errors("export cursors"):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for writer, move in moves.items():
                    row = conn.execute(
                        "SELECT seq_done, partial, partial_rows FROM otlp_export_cursor WHERE writer = ?", (writer,)
                    ).fetchone()
                    current = Cursor(*row) if row is not None else None
                    if current != move.expected:
                        raise StoreConflict(
                            f"the export cursor of writer {writer} was moved by another process", writer=writer
                        )
                conn.executemany(
                    "INSERT INTO otlp_export_cursor(writer, seq_done, partial, partial_rows) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT(writer) DO UPDATE SET seq_done = excluded.seq_done, partial = excluded.partial,"
                    " partial_rows = excluded.partial_rows, updated_at = CURRENT_TIMESTAMP",
                    [(w, m.to.seq_done, m.to.partial, m.to.partial_rows) for w, m in moves.items()],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self.state.close()
