"""Tail sampling's stores on ClickHouse, one at a time: the feed by writer batch, a pass's decisions
written once however often the pass is retried, the report and verdicts before the first decision, the
query's weights from the decisions, and gc's guards (a live writer, a batch not yet whole)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from airlock.errors import GatewayRunning
from airlock.query.spec import QuerySpec
from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.sampling.sampler import Decision
from airlock.sampling.summaries import drop_summaries
from airlock.store.clickhouse.query import ClickHouseSpanQuery
from airlock.store.clickhouse.sampling import (
    ClickHouseDecisionSink,
    ClickHouseSampleReport,
    ClickHouseSamplerFeed,
    clickhouse_sampling_stores,
)
from airlock.store.clickhouse.sampling_gc import ClickHouseRecordCollector
from airlock.store.clickhouse.sink import ClickHouseSegmentSink, with_batch
from airlock.store.clickhouse.transport import ClickHouseTransport
from airlock.store.embedded import DataDir
from airlock.store.embedded.blobs import INDEX_SCHEMA
from airlock.store.embedded.sampling import FileSamplerLock, SQLiteSamplingState
from airlock.store.sampling import FeedSegment

T0 = 1_700_000_000 * 10**9


def _spans(trace_ids: list[str], start: int = T0, digest: str | None = None) -> pa.Table:
    rows = [
        {
            "trace_id": t,
            "span_id": f"{i:016x}",
            "kind": "model.chat",
            "start_ns": start + i,
            "status": "ok",
            "airlock.tenant": "acme",
            "airlock.payload.request": digest,
            "attributes": {"feature": "search"},
        }
        for i, t in enumerate(trace_ids)
    ]
    return pa.Table.from_pylist(rows, schema=SPAN_SCHEMA)


def _index(digests: list[str]) -> pa.Table:
    rows = [
        {"digest": d, "pack": "p.pack", "frame_offset": i * 10, "frame_length": 10, "inner_offset": 0, "length": 4}
        for i, d in enumerate(digests)
    ]
    return pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)


def _decision(trace_id: str, keep: bool, probability: float = 0.25, reserve: bool = False) -> Decision:
    return Decision(
        trace_id=trace_id,
        keep=keep,
        reason="rate",
        probability=probability,
        key="acme|m",
        status="ok",
        traces=1,
        spans=1,
        errors=0,
        input_tokens=10,
        output_tokens=5,
        cost_usd=0.5,
        start_ns=T0,
        duration_ms=1.0,
        reserve=reserve,
    )


def test_the_feed_lists_whole_batches_past_each_cursor_and_reads_their_spans(clickhouse: ClickHouseTransport) -> None:
    sink = ClickHouseSegmentSink(clickhouse)
    sink.write("w1", 0, _spans(["a", "b"]), HOP_SCHEMA.empty_table())
    sink.write("w1", 1, _spans(["c"], T0 + 10), HOP_SCHEMA.empty_table())
    sink.write("w2", 5, _spans(["d"], T0 + 20), HOP_SCHEMA.empty_table())
    # a batch still being written (its spans in, its batches row not): never read in part
    clickhouse.insert_arrow("spans", with_batch(_spans(["e"], T0 + 30), "w2", 6))
    feed = ClickHouseSamplerFeed(clickhouse)
    assert feed.segments_after({}) == [FeedSegment("w1", 0, 0), FeedSegment("w1", 1, 1), FeedSegment("w2", 5, 5)]
    assert feed.segments_after({"w1": 0, "w2": 5}) == [FeedSegment("w1", 1, 1)]
    rows = list(feed.span_rows(FeedSegment("w1", 0, 0), ["trace_id", "attributes", "no.such.column"], 1))
    assert rows == [
        {"trace_id": "a", "attributes": {"feature": "search"}},
        {"trace_id": "b", "attributes": {"feature": "search"}},
    ]


def test_a_retried_pass_writes_its_rows_once_and_a_pass_run_again_replaces_them(
    clickhouse: ClickHouseTransport,
) -> None:
    sink = ClickHouseDecisionSink(clickhouse)
    report = ClickHouseSampleReport(clickhouse)
    first = [_decision("t1", True), _decision("t2", False)]
    sink.write_pass(1, first, drop_summaries(first))
    sink.write_pass(1, first, drop_summaries(first))  # a retry with the same rows: nothing added
    assert [r["trace_id"] for r in report.decisions_of("")] == ["t1", "t2"]
    assert sum(r["traces"] for r in report.drops()) == 1
    other = [_decision("t1", False), _decision("t3", True)]
    sink.write_pass(1, other, drop_summaries(other))  # run again with other rows: they replace the first
    assert sorted((r["trace_id"], r["keep"]) for r in report.decisions_of("")) == [("t1", False), ("t3", True)]
    sink.write_pass(1, first, drop_summaries(first))  # and back: the token was seen, the rows were deleted since
    assert sorted((r["trace_id"], r["keep"]) for r in report.decisions_of("")) == [("t1", True), ("t2", False)]
    assert sum(r["traces"] for r in report.drops()) == 1
    sink.write_pass(2, [_decision("t4", True)], [])
    assert [r["pass"] for r in report.decisions_of("t")] == [1, 1, 2]
    assert sink.merge_small_files() == 0


def test_before_the_first_decision_the_report_is_empty_and_nothing_has_a_verdict(
    tmp_path: Path, clickhouse: ClickHouseTransport
) -> None:
    state = DataDir.at(tmp_path)
    state.create()
    stores = clickhouse_sampling_stores(
        clickhouse, lambda: SQLiteSamplingState(state), lambda: FileSamplerLock.take(state)
    )
    report = stores.report
    assert report.newest_start_ns() is None
    assert report.by_key() == report.by_outcome_and_reason() == report.drops() == []
    assert report.early_decisions() == {}
    assert stores.retention.verdicts(pa.array(["t1"])) is None
    assert stores.retention.decided_through("w1") == -1  # from the state repository


def test_the_query_weights_spans_by_the_decisions_before_any_pruning(clickhouse: ClickHouseTransport) -> None:
    sink = ClickHouseSegmentSink(clickhouse)
    sink.write("w1", 0, _spans(["kept", "dropped", "undecided", "reserved"]), HOP_SCHEMA.empty_table())
    spec = QuerySpec(by=("airlock.tenant",))
    assert ClickHouseSpanQuery(clickhouse).grouped(spec).rows[0]["spans"] == 4
    decided = [_decision("kept", True, 0.25), _decision("dropped", False), _decision("reserved", False, reserve=True)]
    ClickHouseDecisionSink(clickhouse).write_pass(1, decided, drop_summaries(decided))
    # kept stands for 4, undecided for itself, dropped and reserved for none
    assert ClickHouseSpanQuery(clickhouse).grouped(spec).rows[0]["spans"] == 5


def test_gc_refuses_while_a_writer_records_and_keeps_the_index_of_a_batch_not_yet_whole(
    clickhouse: ClickHouseTransport,
) -> None:
    sink = ClickHouseSegmentSink(clickhouse)
    sink.write("w1", 0, _spans(["a"], digest="d-named"), HOP_SCHEMA.empty_table(), _index(["d-named", "d-free"]))
    # a writer died after its batch's blob index went in: its replay needs these rows
    clickhouse.insert_arrow("blob_index", with_batch(_index(["d-pending"]), "w1", 1), dedup_token="w1.1")
    with pytest.raises(GatewayRunning), ClickHouseRecordCollector(clickhouse).writers_stopped():
        pass  # a batch written this minute
    collector = ClickHouseRecordCollector(clickhouse, quiet_s=0)
    with collector.writers_stopped():
        assert collector.indexed_payloads() == {"d-named", "d-free", "d-pending"}
        assert collector.referenced_payloads() == {"d-named", "d-pending"}
        before = collector.payload_bytes()
        freed = collector.release_payloads({"d-free"})
    assert (freed.packs_rewritten, freed.bytes_before, freed.bytes_after) == (0, before, before - 10)
    assert collector.indexed_payloads() == {"d-named", "d-pending"}
