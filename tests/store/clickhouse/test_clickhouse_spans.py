"""ClickHouseSpanReader beyond what the contract test compares: rows read as recorded (no backend
columns, absent maps and lists as None), values with quotes travel as parameters, tenant scoping holds
inside one trace, and an ambiguous prefix finds nothing."""

from __future__ import annotations

import pyarrow as pa

from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.store.clickhouse.sink import ClickHouseSegmentSink
from airlock.store.clickhouse.spans import ClickHouseSpanReader
from airlock.store.clickhouse.transport import ClickHouseTransport
from airlock.store.interface import TraceFilter

T0 = 1_764_000_000 * 10**9


def _write(transport: ClickHouseTransport) -> None:
    spans = [
        {
            "trace_id": "aa11",
            "span_id": "s1",
            "start_ns": T0,
            "end_ns": T0 + 10,
            "status": "ok",
            "airlock.tenant": "o'brien",
            "attributes": {"k": "it's"},
            "gen_ai.response.finish_reasons": ["stop"],
        },
        {
            "trace_id": "aa11",
            "span_id": "s2",
            "start_ns": T0 + 5,
            "end_ns": T0 + 50,
            "status": "error",
            "airlock.tenant": "other",
            "gen_ai.usage.input_tokens": 7,
        },
        {"trace_id": "aa22", "span_id": "s3", "start_ns": T0 + 100, "status": "ok", "airlock.tenant": "o'brien"},
    ]
    hops = [{"trace_id": "aa11", "span_id": s, "attempt": 1, "start_ns": T0} for s in ("s1", "s2")]
    ClickHouseSegmentSink(transport).write(
        "w", 0, pa.Table.from_pylist(spans, schema=SPAN_SCHEMA), pa.Table.from_pylist(hops, schema=HOP_SCHEMA)
    )


def test_rows_read_as_recorded(clickhouse: ClickHouseTransport) -> None:
    _write(clickhouse)
    reader = ClickHouseSpanReader(clickhouse)
    first, second = reader.spans_of_trace("aa11")
    assert list(first) == SPAN_SCHEMA.names  # the record's columns only, in the schema's order
    assert first["attributes"] == {"k": "it's"} and first["gen_ai.response.finish_reasons"] == ["stop"]
    assert second["attributes"] is None and second["gen_ai.response.finish_reasons"] is None
    assert list(reader.hops_of_trace("aa11")[0]) == HOP_SCHEMA.names


def test_a_tenant_sees_its_own_spans_of_a_shared_trace(clickhouse: ClickHouseTransport) -> None:
    _write(clickhouse)
    reader = ClickHouseSpanReader(clickhouse)
    assert [s["span_id"] for s in reader.spans_of_trace("aa11", tenant="o'brien")] == ["s1"]
    assert [h["span_id"] for h in reader.hops_of_trace("aa11", tenant="other")] == ["s2"]
    [mine] = [t for t in reader.traces(TraceFilter(tenant="o'brien")) if t["trace_id"] == "aa11"]
    assert (mine["spans"], mine["errors"], mine["input_tokens"], mine["tenant"]) == (1, 0, 0, "o'brien")
    [every] = reader.traces(TraceFilter(trace_id="aa11"))
    assert (every["spans"], every["errors"], every["tenant"]) == (2, 1, "o'brien,other")


def test_find_trace_by_prefix_span_or_request(clickhouse: ClickHouseTransport) -> None:
    _write(clickhouse)
    reader = ClickHouseSpanReader(clickhouse)
    assert reader.find_trace("aa") is None  # two traces
    assert reader.find_trace("aa2") == "aa22"
    assert reader.find_trace("s2") == "aa11"
    assert reader.find_trace("s2", tenant="o'brien") is None
    assert reader.find_trace("%") is None  # not a pattern
