"""ClickHouseSpanQuery's own edges: an empty record says so, a field no span holds groups as NULL,
filter values that look like SQL are values, and a bad filter is a QueryError."""

from __future__ import annotations

import pyarrow as pa
import pytest

from airlock.errors import QueryError
from airlock.query.spec import Filter, QuerySpec
from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.store.clickhouse.query import ClickHouseSpanQuery
from airlock.store.clickhouse.sink import ClickHouseSegmentSink
from airlock.store.clickhouse.transport import ClickHouseTransport

T0 = 1_764_000_000 * 10**9


def _write(transport: ClickHouseTransport) -> None:
    spans = [
        {
            "trace_id": f"t{i}",
            "span_id": f"s{i}",
            "start_ns": T0 + i,
            "duration_ms": float(i),
            "status": "ok",
            "attributes": {"team": "a'); DROP TABLE spans; --" if i % 2 else "b", "empty": ""},
        }
        for i in range(10)
    ]
    ClickHouseSegmentSink(transport).write(
        "w", 0, pa.Table.from_pylist(spans, schema=SPAN_SCHEMA), HOP_SCHEMA.empty_table()
    )


def test_nothing_recorded_is_said(clickhouse: ClickHouseTransport) -> None:
    answer = ClickHouseSpanQuery(clickhouse).grouped(QuerySpec(by=("tenant",)))
    assert (answer.rows, answer.recorded) == ([], False)


def test_attribute_values_and_missing_fields(clickhouse: ClickHouseTransport) -> None:
    _write(clickhouse)
    query = ClickHouseSpanQuery(clickhouse)
    rows = query.grouped(QuerySpec(by=("team",), where=(Filter.parse("team=a'); DROP TABLE spans; --"),))).rows
    assert [(r["team"], r["spans"]) for r in rows] == [("a'); DROP TABLE spans; --", 5)]
    [nobody] = query.grouped(QuerySpec(by=("no_such_key",))).rows
    assert (nobody["no_such_key"], nobody["spans"]) == (None, 10)
    # a key held with an empty value is not a missing one (a map lookup answers '' for both)
    assert query.grouped(QuerySpec(where=(Filter.parse("empty=null"),))).spans_total == 0
    assert query.grouped(QuerySpec(where=(Filter.parse("nokey=null"),))).spans_total == 10
    [slow] = query.grouped(QuerySpec(where=(Filter.parse("duration_ms>=5"),))).rows
    assert (slow["spans"], slow["p50_ms"]) == (5, 7.0)


def test_bad_filters_are_query_errors(clickhouse: ClickHouseTransport) -> None:
    _write(clickhouse)
    query = ClickHouseSpanQuery(clickhouse)
    with pytest.raises(QueryError):
        query.grouped(QuerySpec(where=(Filter.parse("duration_ms>fast"),)))
    with pytest.raises(QueryError):
        query.grouped(QuerySpec(where=(Filter.parse("team~("),)))
