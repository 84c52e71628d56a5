"""The recorder's writer on ClickHouse: a real BatchWriter whose segments go to chdb. A ClickHouse that
refuses inserts for a while loses nothing and duplicates nothing (the writer keeps its write-ahead file
and retries; every retried insert carries its batch's token), and a dead writer's half-written batch is
found not covered and discarded."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from airlock.config.schema import Recorder as RecorderConfig
from airlock.errors import StoreError, StoreUnavailable
from airlock.record import BatchWriter, Recorder
from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.store.clickhouse.sink import ClickHouseSegmentSink
from airlock.store.clickhouse.transport import ClickHouseTransport, Params
from airlock.store.embedded import DataDir, PackWriter
from airlock.store.embedded.blobs import INDEX_SCHEMA


def record(i: int) -> dict[str, Any]:
    return {
        "trace_id": f"{i:032x}",
        "span_id": f"{i:016x}",
        "request_id": f"{i:016x}",
        "kind": "model.chat",
        "start_ns": 1_764_000_000 * 10**9 + i,
        "end_ns": 1_764_000_000 * 10**9 + 1_000 + i,
        "status": "ok",
        "_payloads": {"airlock.payload.request": b'{"n": %d}' % i},
        "_response_format": "json",
        "_hops": [{"trace_id": f"{i:032x}", "span_id": f"{i:016x}", "attempt": 1, "upstream": "u", "outcome": "ok"}],
    }


class RefusingSpans:
    """A transport that refuses the spans insert the first `failures` times (after the blob index and
    hops of the same batch went in), then passes everything through."""

    def __init__(self, inner: ClickHouseTransport, failures: int) -> None:
        self.inner = inner
        self.database = inner.database
        self.failures = failures
        self.refused = 0

    def command(self, sql: str, params: Params | None = None) -> None:
        self.inner.command(sql, params)

    def query_arrow(self, sql: str, params: Params | None = None) -> pa.Table:
        return self.inner.query_arrow(sql, params)

    def query_rows(self, sql: str, params: Params | None = None) -> list[dict[str, Any]]:
        return self.inner.query_rows(sql, params)

    def insert_arrow(self, table: str, data: pa.Table, dedup_token: str | None = None) -> None:
        if table == "spans" and self.refused < self.failures:
            self.refused += 1
            raise StoreError("ClickHouse refused the insert (test)")
        self.inner.insert_arrow(table, data, dedup_token)

    def close(self) -> None:
        self.inner.close()


def _counts(transport: ClickHouseTransport) -> dict[str, int]:
    out = {}
    for table in ("spans", "hops", "blob_index", "batches"):
        out[table] = int(transport.query_rows(f"SELECT count() AS n FROM {table}")[0]["n"])
    return out


def _wait(transport: ClickHouseTransport, spans: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _counts(transport)["spans"] < spans:
        time.sleep(0.05)


def test_a_refusing_clickhouse_loses_and_duplicates_nothing(clickhouse: ClickHouseTransport, tmp_path: Path) -> None:
    data = DataDir.at(tmp_path)
    data.create()
    rec = Recorder(RecorderConfig(segment_max_age_s=0.05), data, "w-ch", {"airlock.node": "n1"})
    flaky = RefusingSpans(clickhouse, failures=3)
    writer = BatchWriter(rec, PackWriter(data.blobs, "w-ch"), ClickHouseSegmentSink(flaky))
    for i in range(40):
        rec.submit(record(i))
    writer.start()
    try:
        _wait(clickhouse, 40)
        for i in range(40, 60):
            rec.submit(record(i))
        _wait(clickhouse, 60)
    finally:
        writer.stop()
    assert flaky.refused == 3
    counts = _counts(clickhouse)
    assert counts["spans"] == counts["hops"] == 60
    assert counts["blob_index"] == 60  # one payload per record, each indexed once despite the retries
    distinct = clickhouse.query_rows("SELECT uniqExact(span_id) AS n, uniqExact(writer_id, seq) AS b FROM spans")
    assert distinct == [{"n": 60, "b": counts["batches"]}]
    assert not list(data.wal.iterdir())  # every write-ahead file went once its batch was in
    assert rec.error is None  # the refusals were noted, then cleared by the insert that went through


def _batch(n: int) -> tuple[pa.Table, pa.Table, pa.Table]:
    spans = pa.Table.from_pylist(
        [{"trace_id": "t", "span_id": f"s{i}", "start_ns": 1_764_000_000 * 10**9 + i} for i in range(n)],
        schema=SPAN_SCHEMA,
    )
    hops = pa.Table.from_pylist([{"trace_id": "t", "span_id": "s0", "start_ns": 1_764_000_000 * 10**9}], HOP_SCHEMA)
    index = pa.Table.from_pylist(
        [{"digest": "d" * 64, "pack": "p", "frame_offset": 0, "frame_length": 1, "inner_offset": 0, "length": 1}],
        INDEX_SCHEMA,
    )
    return spans, hops, index


def test_a_half_written_batch_is_not_covered_and_is_discarded(clickhouse: ClickHouseTransport) -> None:
    spans, hops, index = _batch(3)
    dead = ClickHouseSegmentSink(RefusingSpans(clickhouse, failures=1))
    try:
        dead.write("w-dead", 4, spans, hops, index)
    except StoreUnavailable:
        pass
    else:
        raise AssertionError("the refused spans insert must raise StoreUnavailable")
    sink = ClickHouseSegmentSink(clickhouse)
    assert not sink.covers("w-dead", 4)
    assert _counts(clickhouse) == {"spans": 0, "hops": 1, "blob_index": 1, "batches": 0}
    sink.write("w-live", 0, spans, hops, index)
    sink.discard_partial("w-dead", 4)
    sink.discard_partial("w-live", 0)  # a whole batch is left alone
    assert _counts(clickhouse) == {"spans": 3, "hops": 1, "blob_index": 1, "batches": 1}
    assert sink.covers("w-live", 0) and not sink.covers("w-live", 1)
    sink.write("w-live", 0, spans, hops, index)  # the same batch again: nothing added
    assert _counts(clickhouse) == {"spans": 3, "hops": 1, "blob_index": 1, "batches": 1}
    assert sink.compact("w-live", 2) == 0


def test_a_batch_across_midnight_retried_lands_once(clickhouse: ClickHouseTransport) -> None:
    # Two days are two parts of one insert; the retry's blocks carry the same tokens and are dropped.
    midnight = (1_764_000_000 * 10**9 // 86_400_000_000_000 + 1) * 86_400_000_000_000
    spans = pa.Table.from_pylist(
        [{"trace_id": "t", "span_id": f"s{i}", "start_ns": midnight - 2 + i} for i in range(4)], schema=SPAN_SCHEMA
    )
    sink = ClickHouseSegmentSink(clickhouse)
    sink.write("w-night", 3, spans, HOP_SCHEMA.empty_table())
    sink.write("w-night", 3, spans, HOP_SCHEMA.empty_table())
    days = clickhouse.query_rows(
        "SELECT toDate(fromUnixTimestamp64Nano(start_ns, 'UTC')) AS day, count() AS n FROM spans"
        " GROUP BY day ORDER BY day"
    )
    assert [r["n"] for r in days] == [2, 2]
    assert _counts(clickhouse)["batches"] == 1
