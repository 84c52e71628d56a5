"""ClickHouseSliceCandidates' columns: measures as recorded, dimensions and every free attribute
dictionary-encoded, columns no selected span holds left out, rows in start order."""

from __future__ import annotations

import pyarrow as pa

from airlock.query.spec import Filter
from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.store.clickhouse.sink import ClickHouseSegmentSink
from airlock.store.clickhouse.slices import ClickHouseSliceCandidates
from airlock.store.clickhouse.transport import ClickHouseTransport

T0 = 1_764_000_000 * 10**9


def test_columns_and_order(clickhouse: ClickHouseTransport) -> None:
    spans = [
        {
            "trace_id": "t",
            "span_id": f"s{i}",
            "start_ns": T0 + (9 - i),
            "status": "ok",
            "duration_ms": 1.0 * i,
            "airlock.tenant": "acme" if i < 5 else None,
            "attributes": {"team": f"x{i % 2}", **({"rare": "y"} if i == 7 else {})},
        }
        for i in range(10)
    ]
    ClickHouseSegmentSink(clickhouse).write(
        "w", 0, pa.Table.from_pylist(spans, schema=SPAN_SCHEMA), HOP_SCHEMA.empty_table()
    )
    slices = ClickHouseSliceCandidates(clickhouse)
    table = slices.candidate_spans(
        None, None, (), ["start_ns", "duration_ms", "gen_ai.usage.input_tokens"], ["airlock.tenant", "kind"]
    )
    assert table.column_names == ["start_ns", "duration_ms", "airlock.tenant", "attributes.rare", "attributes.team"]
    assert table.schema.field("start_ns").type == pa.int64()
    assert pa.types.is_dictionary(table.schema.field("attributes.team").type)
    assert table.column("start_ns").to_pylist() == sorted(table.column("start_ns").to_pylist())
    assert table.column("attributes.rare").to_pylist().count("y") == 1
    picked = slices.candidate_spans(T0, T0 + 5, (Filter.parse("team=x1"),), ["start_ns"], ["airlock.tenant"])
    assert picked.column("start_ns").to_pylist() == [T0, T0 + 2, T0 + 4]
    assert picked.column_names == ["start_ns", "attributes.rare", "attributes.team"]  # no tenant on these
