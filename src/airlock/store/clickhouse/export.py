"""The OTLP exporter's feed on ClickHouse: the spans written since each writer's cursor.

The unit is the writer's batch, (writer_id, seq): every row of the spans table carries the batch it
came from, and a batch never changes once written (a retried insert is deduplicated, ClickHouse's merges
keep its rows). Only batches the `batches` table names are read: that row is inserted last, so a batch
still being written (or half written by a writer that died: its spans may cross midnight, two parts)
is never sent in part and then passed over. A cursor is a position of the writer's batches: `seq_done`
is the last batch sent whole, and `partial` (the batch's seq, as text) with `partial_rows` says how many
rows of the next one went out. Nothing merges batches here, so no row is ever sent again (`resent`
stays 0). Within a batch, rows go in start order (then span id): the tables keep no row order.
The cursors themselves are control-plane state (ExportCursorRepository)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from airlock.record.schema import SPAN_SCHEMA
from airlock.store.clickhouse.replay import as_span_table
from airlock.store.clickhouse.transport import ClickHouseTransport, quoted
from airlock.store.export import Cursor, ExportBatch

_SPAN_COLUMNS = ", ".join(quoted(n) for n in SPAN_SCHEMA.names)


class ClickHouseExportFeed:
    """ExportFeed over the spans table, batch by batch."""

    def __init__(self, transport: ClickHouseTransport) -> None:
        self.transport = transport

    def _batches_after(self, cursors: Mapping[str, Cursor]) -> list[dict[str, Any]]:
        """(writer_id, seq, rows) of every whole batch past its writer's cursor, by writer then seq."""
        writers = sorted(cursors)
        return self.transport.query_rows(
            "SELECT writer_id, seq, max(spans) AS rows FROM batches"
            " WHERE seq > transform(writer_id, {writers:Array(String)}, {done:Array(Int64)}, toInt64(-1))"
            " GROUP BY writer_id, seq ORDER BY writer_id, seq",
            {"writers": writers, "done": [int(cursors[w].seq_done) for w in writers]},
        )

    def _rows(self, batches: list[tuple[str, int]]) -> dict[tuple[str, int], pa.Table]:
        """The spans of these batches, each in the order it was written."""
        if not batches:
            return {}
        table = self.transport.query_arrow(
            f"SELECT writer_id, seq, {_SPAN_COLUMNS} FROM spans"
            " WHERE (writer_id, seq) IN arrayZip({writers:Array(String)}, {seqs:Array(Int64)})"
            " ORDER BY writer_id, seq, start_ns, span_id",
            {"writers": [w for w, _ in batches], "seqs": [s for _, s in batches]},
        )
        writer_col = table.column("writer_id").to_pylist()
        seq_col = table.column("seq").to_pylist()
        spans = as_span_table(table)
        out: dict[tuple[str, int], pa.Table] = {}
        start = 0
        for i in range(1, len(writer_col) + 1):
            if i == len(writer_col) or (writer_col[i], seq_col[i]) != (writer_col[start], seq_col[start]):
                out[(writer_col[start], int(seq_col[start]))] = spans.slice(start, i - start)
                start = i
        return out

    def next_batch(self, cursors: Mapping[str, Cursor], limit: int) -> ExportBatch:
        batch = ExportBatch()
        chosen: list[tuple[str, int, int, int, int]] = []  # writer, seq, its rows, rows to skip, rows to take
        taken = 0
        for b in self._batches_after(cursors):
            if taken >= limit:
                break
            writer, seq, total = str(b["writer_id"]), int(b["seq"]), int(b["rows"])
            at = cursors.get(writer, Cursor())
            skip = at.partial_rows if at.partial == str(seq) else 0
            want = max(min(total - skip, limit - taken), 0)
            chosen.append((writer, seq, total, skip, want))
            taken += want
        rows = self._rows([(w, s) for w, s, total, _, _ in chosen if total])
        for writer, seq, total, skip, want in chosen:
            if want:
                table = rows.get((writer, seq))
                if table is None:  # its rows were deleted under us (a discarded batch): the next read decides
                    return batch
                batch.rows.extend(table.slice(skip, want).to_pylist())
            at = batch.advance.get(writer, cursors.get(writer, Cursor()))
            batch.since.setdefault(writer, cursors.get(writer))
            batch.advance[writer] = Cursor(seq) if skip + want >= total else Cursor(at.seq_done, str(seq), skip + want)
        return batch

    def ends(self) -> tuple[dict[str, Cursor], int]:
        rows = self.transport.query_rows(
            "SELECT writer_id, max(seq) AS last, uniqExact(seq) AS batches FROM batches"
            " GROUP BY writer_id ORDER BY writer_id"
        )
        return {str(r["writer_id"]): Cursor(int(r["last"])) for r in rows}, sum(int(r["batches"]) for r in rows)
