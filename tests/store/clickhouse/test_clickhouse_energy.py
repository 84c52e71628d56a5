"""The energy report's call facts on ClickHouse, and the report built on them (the roll-up is the
embedded aggregator, which reads no storage)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest

from airlock.energy.report import energy_report
from airlock.ledger.lines import pricing_tables
from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.store import build_stores
from airlock.store.clickhouse.energy import CALL_FACT_SCHEMA, ClickHouseCallFacts
from airlock.store.clickhouse.sink import ClickHouseSegmentSink
from airlock.store.clickhouse.transport import ClickHouseTransport
from ledger.ledger_record import T0, config, span

S = 10**9


def test_call_facts_and_the_report_on_them(tmp_path: Path, clickhouse: ClickHouseTransport) -> None:
    rows = [
        span(3, start_ns=T0 + 3 * S, end_ns=T0 + 2 * S, attributes={"feature": "chat", "task_type": "qa"}),
        span(1, **{"airlock.upstream": "up-b", "airlock.upstream.model": "m-large-v2", "airlock.route": None}),
        span(
            2,
            **{"gen_ai.usage.input_tokens": None, "gen_ai.usage.output_tokens": None, "airlock.sample.rate": 4.0},
            attributes={"feature": "search"},
        ),
        span(4, **{"airlock.upstream": None}),  # rejected: reached no upstream
        span(5, kind="tool"),
        span(6, **{"airlock.replay.run": "r1"}),
        span(7, start_ns=T0 + 10_000 * S),  # outside the period
    ]
    ClickHouseSegmentSink(clickhouse).write(
        "w1", 0, pa.Table.from_pylist(rows, schema=SPAN_SCHEMA), HOP_SCHEMA.empty_table()
    )
    cfg = config(tmp_path)
    facts = ClickHouseCallFacts(clickhouse).call_facts(T0, T0 + 100 * S, pricing_tables(cfg))
    assert facts.schema == CALL_FACT_SCHEMA
    got = {r["span_id"]: r for r in facts.to_pylist()}
    assert list(got) == [f"{n:016x}" for n in (1, 2, 3)]  # oldest first
    one, two, three = got.values()
    assert (one["upstream"], one["model"], one["tenant"], one["feature"]) == ("up-b", "m-large", "acme", None)
    assert (two["in_tok"], two["out_tok"], two["cached"], two["weight"]) == (990, 101, 0, 4.0)  # local counts
    assert (two["feature"], two["task_type"]) == ("search", "search")  # the task type defaults to the feature
    assert (three["task_type"], three["end_ns"]) == ("qa", three["start_ns"])  # never ending before it started
    assert three["task"] == three["trace_id"]
    points = [{"batch": 1, "prefill_j_per_token": 0.1, "decode_j_per_token": 1.0}]
    cfg = config(tmp_path, energy={"profiles": [{"model": "m-large", "points": points, "idle_share": 0.0, "pue": 1.0}]})
    report = energy_report(
        cfg,
        ["feature"],
        T0,
        T0 + 100 * S,
        stores=replace(build_stores(cfg), call_facts=ClickHouseCallFacts(clickhouse)),
    )
    by_feature = {r["feature"]: r for r in report.rows}
    assert set(by_feature) == {"(none)", "search", "chat"}
    # the sampled call stands for four: its tokens and profile joules count four times
    assert by_feature["search"]["calls"] == 4 and by_feature["search"]["input_tokens"] == 990 * 4
    assert by_feature["search"]["joules"] == pytest.approx(4 * (990 * 0.1 + 101 * 1.0))
    assert report.total["calls"] == 6 and report.no_energy == []
