"""The demo report's reads on ClickHouse, over a small record written as the writer's batches."""

from __future__ import annotations

import pyarrow as pa
import pytest

from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.store.clickhouse.demo import ClickHouseDemoRecord
from airlock.store.clickhouse.sink import ClickHouseSegmentSink
from airlock.store.clickhouse.transport import ClickHouseTransport
from airlock.store.demo import HopOutcome, RegionCalls


def _span(i: int, **columns: object) -> dict[str, object]:
    return {"trace_id": f"{i:032x}", "span_id": f"{i:016x}", "start_ns": 1_000 + i, "duration_ms": float(i)} | columns


def test_demo_record_reads(clickhouse: ClickHouseTransport) -> None:
    record = ClickHouseDemoRecord(clickhouse)
    assert record.spans_recorded() == 0
    assert record.calls_by_region() == [] and record.first_failed_received_trace() is None
    rows = [
        _span(1, status="ok", **{"airlock.upstream.region": "eu", "gen_ai.usage.input_tokens": 10}),
        _span(2, status="error", **{"airlock.upstream.region": "eu", "airlock.attempts": 2}),
        _span(3, status="ok", **{"airlock.upstream.region": "us", "gen_ai.usage.cache_read.input_tokens": 4}),
        _span(4, status="error", **{"airlock.payload.upstream_request": "ab" * 32}),
        _span(5, status="error", **{"airlock.source": "otlp", "airlock.upstream.region": "eu"}),
        _span(6, status="cancelled", **{"airlock.upstream.region": "us", "duration_ms": None}),
    ]
    hops = [
        {"trace_id": f"{2:032x}", "span_id": f"{2:016x}", "attempt": 1, "upstream": "eu-1", "outcome": "http_5xx"},
        {"trace_id": f"{2:032x}", "span_id": f"{2:016x}", "attempt": 2, "upstream": "us-1", "outcome": "ok"},
    ]
    ClickHouseSegmentSink(clickhouse).write(
        "w1",
        0,
        pa.Table.from_pylist(rows, schema=SPAN_SCHEMA),
        pa.Table.from_pylist(hops, schema=HOP_SCHEMA),
    )
    assert record.spans_recorded() == 6
    regions = record.calls_by_region()
    # OTLP's span is left out; the quantiles interpolate (1.5 of 1 and 2) and skip a missing duration
    assert regions[0] == RegionCalls("eu", 2, 1, 1, 0, 1, 10, 0, 0, 1.5, pytest.approx(1.95))
    by_region = {r.region: r for r in regions}
    assert set(by_region) == {"eu", "us", "(none: rejected or exhausted)"}
    assert by_region["us"] == RegionCalls("us", 2, 1, 0, 1, 0, 0, 0, 4, 3.0, 3.0)
    assert record.hop_outcomes() == [HopOutcome("eu-1", "http_5xx", 1), HopOutcome("us-1", "ok", 1)]
    assert record.first_failed_received_trace() == f"{5:032x}"
    assert record.upstream_request_digest(f"{4:032x}") == "ab" * 32
    assert record.upstream_request_digest(f"{1:032x}") is None
    # the traces and drift beside them come from the core readers
    assert record.find_trace(f"{4:016x}") == f"{4:032x}"  # by its span id
    assert [s["span_id"] for s in record.spans_of_trace(f"{2:032x}")] == [f"{2:016x}"]
    assert record.token_ratios(["model"], None, "input") == []
