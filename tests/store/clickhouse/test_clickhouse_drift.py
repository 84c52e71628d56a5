"""ClickHouseDriftReader: only ok calls with both counts, keys per dimension ("None" where missing),
start order, and the window's start."""

from __future__ import annotations

import pyarrow as pa
import pytest

from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.store.clickhouse.drift import ClickHouseDriftReader
from airlock.store.clickhouse.sink import ClickHouseSegmentSink
from airlock.store.clickhouse.transport import ClickHouseTransport

T0 = 1_764_000_000 * 10**9


def test_ratios(clickhouse: ClickHouseTransport) -> None:
    spans = [
        {
            "trace_id": "t",
            "span_id": "a",
            "start_ns": T0 + 2,
            "status": "ok",
            "gen_ai.usage.input_tokens": 110,
            "airlock.local.input_tokens": 100,
            "gen_ai.request.model": "m",
            "airlock.script": "cjk",
        },
        {
            "trace_id": "t",
            "span_id": "b",
            "start_ns": T0 + 1,
            "status": "ok",
            "gen_ai.usage.input_tokens": 90,
            "airlock.local.input_tokens": 100,
            "gen_ai.request.model": "m",
            "airlock.upstream.model": "m-up",
        },
        {
            "trace_id": "t",
            "span_id": "c",
            "start_ns": T0 + 3,
            "status": "error",
            "gen_ai.usage.input_tokens": 1,
            "airlock.local.input_tokens": 100,
        },
        {
            "trace_id": "t",
            "span_id": "d",
            "start_ns": T0 + 4,
            "status": "ok",
            "gen_ai.usage.input_tokens": 5,
            "airlock.local.input_tokens": 0,
        },
    ]
    ClickHouseSegmentSink(clickhouse).write(
        "w", 0, pa.Table.from_pylist(spans, schema=SPAN_SCHEMA), HOP_SCHEMA.empty_table()
    )
    drift = ClickHouseDriftReader(clickhouse)
    got = drift.token_ratios(("model", "script", "tenant"), None, "input")
    assert [(r.key, r.start_ns) for r in got] == [(("m-up", "none", "None"), T0 + 1), (("m", "cjk", "None"), T0 + 2)]
    assert [round(r.ratio, 9) for r in got] == [-0.1, 0.1]
    assert [r.key for r in drift.token_ratios((), T0 + 2, "input")] == [()]
    assert drift.token_ratios((), None, "output") == []
    with pytest.raises(ValueError):
        drift.token_ratios((), None, "sideways")
