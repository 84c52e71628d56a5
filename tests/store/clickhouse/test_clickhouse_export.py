"""The OTLP export feed on ClickHouse: batch by batch per writer, through the exporter's own tail and a
real cursor repository, resuming inside a batch and after a restart."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.store.clickhouse.export import ClickHouseExportFeed
from airlock.store.clickhouse.sink import ClickHouseSegmentSink, with_batch
from airlock.store.clickhouse.transport import ClickHouseTransport
from airlock.store.embedded import DataDir
from airlock.store.embedded.export import SQLiteExportCursors
from airlock.store.export import Cursor
from airlock.telemetry.exporter import ExportTail


def _batch(first_id: int, n: int, source: str | None = None) -> pa.Table:
    rows = [
        {
            "trace_id": f"{first_id + i:032x}",
            "span_id": f"{first_id + i:016x}",
            "kind": "model.chat",
            "start_ns": 1_000 + first_id + i,
            "status": "ok",
            "airlock.source": source,
            "attributes": {"feature": "x"},
        }
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=SPAN_SCHEMA)


def _tail(tmp_path: Path, clickhouse: ClickHouseTransport) -> ExportTail:
    data = DataDir.at(tmp_path)
    data.create()
    return ExportTail(ClickHouseExportFeed(clickhouse), SQLiteExportCursors(data.state_db), include_received=False)


def _tail_all(tail: ExportTail, limit: int) -> list[str]:
    seen = []
    while not (batch := tail.next_batch(limit)).empty:
        seen += [r["span_id"] for r in batch.rows]
        tail.commit(batch)
    return seen


def test_each_row_goes_once_and_a_restart_resumes_inside_a_batch(
    tmp_path: Path, clickhouse: ClickHouseTransport
) -> None:
    sink = ClickHouseSegmentSink(clickhouse)
    for seq in (0, 1, 4):  # a writer's batch numbers may have gaps (a discarded partial batch)
        sink.write("w1", seq, _batch(seq * 10, 5), HOP_SCHEMA.empty_table())
    sink.write("w2", 0, _batch(100, 4, source="otlp"), HOP_SCHEMA.empty_table())
    tail = _tail(tmp_path, clickhouse)
    batch = tail.next_batch(7)  # stops inside w1's second batch
    assert batch.since == {"w1": None}
    assert batch.advance == {"w1": Cursor(0, "1", 2)}
    tail.commit(batch)
    tail.close()
    tail = _tail(tmp_path, clickhouse)  # a restart: the cursor is in SQLite
    seen = [r["span_id"] for r in batch.rows] + _tail_all(tail, 4)
    assert seen == [f"{i:016x}" for i in (*range(0, 5), *range(10, 15), *range(40, 45))]
    assert tail.cursor() == {"w1": Cursor(4), "w2": Cursor(0)}  # received spans are passed over, not sent
    sink.write("w1", 5, _batch(50, 2), HOP_SCHEMA.empty_table())
    assert _tail_all(tail, 100) == [f"{i:016x}" for i in (50, 51)]
    assert tail.next_batch(100).empty
    tail.close()


def test_rows_are_whole_spans_and_ends_cover_every_batch(tmp_path: Path, clickhouse: ClickHouseTransport) -> None:
    feed, sink = ClickHouseExportFeed(clickhouse), ClickHouseSegmentSink(clickhouse)
    assert feed.ends() == ({}, 0)
    assert feed.next_batch({}, 10).empty
    sink.write("w1", 0, _batch(0, 3), HOP_SCHEMA.empty_table())
    sink.write("w1", 1, _batch(10, 3), HOP_SCHEMA.empty_table())
    sink.write("w2", 7, _batch(20, 1), HOP_SCHEMA.empty_table())
    assert feed.ends() == ({"w1": Cursor(1), "w2": Cursor(7)}, 3)
    row = feed.next_batch({}, 1).rows[0]
    assert set(row) == set(SPAN_SCHEMA.names)  # the batch columns writer_id and seq are not span columns
    assert (row["span_id"], row["attributes"], row["gen_ai.response.finish_reasons"]) == (
        f"{0:016x}",
        [("feature", "x")],
        None,
    )
    tail = _tail(tmp_path, clickhouse)
    assert tail.start_at_end() == 3  # a first start without backfill skips what is already recorded
    sink.write("w2", 8, _batch(30, 2), HOP_SCHEMA.empty_table())
    assert _tail_all(tail, 10) == [f"{30:016x}", f"{31:016x}"]
    tail.close()


def test_a_batch_still_being_written_is_not_sent_in_part(tmp_path: Path, clickhouse: ClickHouseTransport) -> None:
    """A batch's spans may land as two parts (they cross midnight) before its batches row: until that
    row says the batch is whole, none of it goes, so no cursor passes over its missing rows."""
    sink = ClickHouseSegmentSink(clickhouse)
    sink.write("w1", 0, _batch(0, 2), HOP_SCHEMA.empty_table())
    half = _batch(10, 3).slice(0, 2)  # the first part of batch 1 is in, the rest and its batches row not yet
    clickhouse.insert_arrow("spans", with_batch(half, "w1", 1))
    tail = _tail(tmp_path, clickhouse)
    assert _tail_all(tail, 100) == [f"{0:016x}", f"{1:016x}"]
    assert tail.cursor() == {"w1": Cursor(0)}
    clickhouse.insert_arrow("spans", with_batch(_batch(10, 3).slice(2), "w1", 1))
    whole = {"writer_id": ["w1"], "seq": pa.array([1], pa.int64()), "spans": pa.array([3], pa.uint64())}
    clickhouse.insert_arrow("batches", pa.table(whole))
    assert _tail_all(tail, 100) == [f"{i:016x}" for i in (10, 11, 12)]
    tail.close()
