"""The core readers of the record answer the same on the embedded store and on ClickHouse: one generated
data set (spans and hops of several tenants, models, upstreams, days, free attributes, replays, sampled
spans and gaps) is written from the same rows through the embedded ParquetSegments and through
ClickHouseSegmentSink (on chdb), and SpanReader, DriftReader, SpanQuery and SliceCandidates are asked
the same questions of both."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import clickhouse_engine
from airlock.query.spec import Filter, QuerySpec
from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.slices.finder import DIMENSION_COLUMNS, MEASURE_COLUMNS
from airlock.store.clickhouse.drift import ClickHouseDriftReader
from airlock.store.clickhouse.query import ClickHouseSpanQuery
from airlock.store.clickhouse.sink import ClickHouseSegmentSink
from airlock.store.clickhouse.slices import ClickHouseSliceCandidates
from airlock.store.clickhouse.spans import ClickHouseSpanReader
from airlock.store.clickhouse.transport import ClickHouseTransport
from airlock.store.embedded import DataDir, ParquetSegments
from airlock.store.embedded.query import DuckDBSpanReader
from airlock.store.embedded.query_engine import DuckDBSpanQuery
from airlock.store.embedded.slices import ParquetSliceCandidates
from airlock.store.interface import TraceFilter
from airlock.store.query import NS_PER_DAY, PriceRates

# the fixtures of tests/clickhouse_engine.py, for this module
clickhouse = clickhouse_engine.clickhouse
_chdb_engine_folder = clickhouse_engine._chdb_engine_folder

T0 = 1_764_000_000 * 10**9 - 7 * 3_600 * 10**9  # a few hours before a UTC midnight: the record spans days
TENANTS = ["acme", "globex", "initech", None]
MODELS = ["gpt-big", "gpt-small", "claude-mid"]
UPSTREAMS = ["up-eu", "up-us"]


def _rows(n: int = 600) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rnd = random.Random(13)
    spans, hops = [], []
    for i in range(n):
        trace = i // 3 if i % 5 else 1000 + i  # most traces hold three spans
        tenant = TENANTS[(trace + (1 if i % 17 == 0 else 0)) % 4]  # a few traces hold two tenants' spans
        model = MODELS[rnd.randrange(3)]
        status = rnd.choices(["ok", "error", "cancelled"], [0.85, 0.12, 0.03])[0]
        upstream = UPSTREAMS[i % 2] if i % 11 else None
        start = T0 + i * 97 * 10**9 + rnd.randrange(10**9)
        duration = round(rnd.uniform(20, 900), 3)
        tin = rnd.randrange(50, 4000) if i % 13 else None
        tout = rnd.randrange(5, 800) if i % 13 else None
        attrs: dict[str, str] = {"team": ["search", "chat", "billing"][i % 3]}
        if i % 4 == 0:
            attrs["feature"] = f"f{i % 7}"
        if i % 50 == 0:
            attrs["canary"] = "yes"
        row: dict[str, Any] = {
            "trace_id": f"{trace:032x}",
            "span_id": f"{i:016x}",
            "request_id": f"r{i:015x}",
            "kind": "model.chat",
            "start_ns": start,
            "end_ns": start + int(duration * 10**6),
            "duration_ms": duration,
            "status": status,
            "http_status": 200 if status == "ok" else 502,
            "airlock.tenant": tenant,
            "airlock.task": f"task-{trace % 9}",
            "airlock.node": "n1",
            "gen_ai.request.model": model,
            "gen_ai.response.model": model + "-2025" if i % 3 else None,
            "gen_ai.response.finish_reasons": ["stop"] if status == "ok" else None,
            "gen_ai.usage.input_tokens": tin,
            "gen_ai.usage.output_tokens": tout,
            "gen_ai.usage.cache_read.input_tokens": (tin // 4) if tin and i % 3 == 0 else None,
            "airlock.usage.reasoning_tokens": (tout // 2) if tout and i % 5 == 0 else None,
            "airlock.local.input_tokens": int(tin * rnd.uniform(0.9, 1.1)) if tin and i % 7 else None,
            "airlock.local.output_tokens": int(tout * rnd.uniform(0.9, 1.1)) if tout and i % 6 else None,
            "airlock.local.tokenizer": "tiktoken" if i % 2 else "sentencepiece",
            "airlock.script": ["latin", "cjk", None][i % 3],
            "airlock.upstream": upstream,
            "airlock.upstream.model": model if upstream and i % 9 else None,
            "airlock.upstream.region": "eu-west-1" if upstream == "up-eu" else None,
            "airlock.attempts": 1 + (i % 8 == 0),
            "airlock.request.stream": bool(i % 2),
            "airlock.sample.rate": 4.0 if i % 10 == 0 else (0.0 if i % 23 == 0 else None),
            "airlock.replay.run": "run-1" if i % 19 == 0 else None,
            "attributes": attrs,
            "airlock.schema_version": 4,
        }
        spans.append(row)
        for attempt in range(1, row["airlock.attempts"] + 1):
            hops.append(
                {
                    "trace_id": row["trace_id"],
                    "span_id": row["span_id"],
                    "attempt": attempt,
                    "upstream": upstream,
                    "start_ns": start,
                    "outcome": "ok" if attempt == row["airlock.attempts"] else "retry",
                    "http_status": 200,
                }
            )
    return spans, hops


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory, _chdb_engine_folder: Path) -> Iterator[dict[str, Any]]:
    """The same rows, in three batches, on both stores; the readers of each (once for the module: the
    tests only read)."""
    for transport in clickhouse_engine.fresh_clickhouse(_chdb_engine_folder):
        yield _write_both(tmp_path_factory.mktemp("record") / "data", transport)


def _write_both(folder: Path, clickhouse: ClickHouseTransport) -> dict[str, Any]:
    spans, hops = _rows()
    data = DataDir.at(folder)
    data.create()
    segments, sink = ParquetSegments(data), ClickHouseSegmentSink(clickhouse)
    for seq, (a, b) in enumerate(((0, 200), (200, 450), (450, len(spans)))):
        ids = {s["span_id"] for s in spans[a:b]}
        batch = pa.Table.from_pylist(spans[a:b], schema=SPAN_SCHEMA)
        batch_hops = pa.Table.from_pylist([h for h in hops if h["span_id"] in ids], schema=HOP_SCHEMA)
        segments.write("w1", seq, batch, batch_hops)
        sink.write("w1", seq, batch, batch_hops)
    return {
        "spans": spans,
        "embedded": {
            "reader": DuckDBSpanReader(data),
            "query": DuckDBSpanQuery(data),
            "slices": ParquetSliceCandidates(data),
        },
        "clickhouse": {
            "reader": ClickHouseSpanReader(clickhouse),
            "drift": ClickHouseDriftReader(clickhouse),
            "query": ClickHouseSpanQuery(clickhouse),
            "slices": ClickHouseSliceCandidates(clickhouse),
        },
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _assert_same(embedded: Any, on_clickhouse: Any) -> None:
    assert _same(embedded, on_clickhouse), f"embedded:\n{embedded}\nclickhouse:\n{on_clickhouse}"


def _plain(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """DuckDB's answer with maps as dicts and empty maps or lists as None (as ClickHouse reads them)."""
    out = []
    for row in rows:
        fixed = {}
        for k, v in row.items():
            if isinstance(v, list) and v and isinstance(v[0], tuple):
                v = dict(v)
            fixed[k] = None if isinstance(v, (dict, list)) and not v else v
        out.append(fixed)
    return out


TRACE_FILTERS = [
    TraceFilter(limit=1000),
    TraceFilter(limit=7),
    TraceFilter(tenant="acme", limit=1000),
    TraceFilter(tenant="globex", status="error", limit=1000),
    TraceFilter(model="gpt-small", since_ns=T0 + 10_000 * 10**9, until_ns=T0 + 40_000 * 10**9, limit=1000),
    TraceFilter(attributes={"team": "chat", "tenant": "initech"}, limit=1000),
    TraceFilter(attributes={"feature": "f3"}, limit=1000),
    TraceFilter(attributes={"airlock.request.stream": "true", "http_status": "502"}, limit=1000),
    TraceFilter(originals_only=True, limit=1000),
    TraceFilter(trace_id=f"{5:032x}", limit=1000),
]


@pytest.mark.parametrize("flt", TRACE_FILTERS, ids=range(len(TRACE_FILTERS)))
def test_traces(stores: dict[str, Any], flt: TraceFilter) -> None:
    def normal(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for r in rows:  # the embedded store lists a trace's models in no particular order
            r["models"] = ",".join(sorted(r["models"].split(","))) if r["models"] else r["models"]
        return rows

    embedded = normal(stores["embedded"]["reader"].traces(flt))
    assert embedded, "every filter here matches something"
    _assert_same(embedded, normal(stores["clickhouse"]["reader"].traces(flt)))


def test_spans_and_hops_of_traces(stores: dict[str, Any]) -> None:
    traces = sorted({s["trace_id"] for s in stores["spans"]})[::7]
    emb, ch = stores["embedded"]["reader"], stores["clickhouse"]["reader"]
    for trace in traces:
        for tenant in (None, "acme", "globex"):
            _assert_same(_plain(emb.spans_of_trace(trace, tenant=tenant)), ch.spans_of_trace(trace, tenant=tenant))
            _assert_same(_plain(emb.hops_of_trace(trace, tenant=tenant)), ch.hops_of_trace(trace, tenant=tenant))
    assert ch.spans_of_trace("nope") == [] and ch.hops_of_trace("nope") == []


def test_find_trace(stores: dict[str, Any]) -> None:
    emb, ch = stores["embedded"]["reader"], stores["clickhouse"]["reader"]
    asks = [f"{5:032x}", f"{5:032x}"[:20], "0" * 8, f"{31:016x}", f"r{44:015x}", "zzz", ""]
    for ask in asks:
        for tenant in (None, "acme"):
            _assert_same(emb.find_trace(ask, tenant=tenant), ch.find_trace(ask, tenant=tenant))
    assert ch.find_trace(f"{31:016x}") is not None


@pytest.mark.parametrize("side", ["input", "output"])
def test_token_ratios(stores: dict[str, Any], side: str) -> None:
    emb, ch = stores["embedded"]["reader"], stores["clickhouse"]["drift"]
    for by, since in (
        ((), None),
        (("model",), None),
        (("script", "tenant"), T0 + 20_000 * 10**9),
        (("model", "script", "upstream", "tokenizer", "tenant"), None),
    ):
        expected = emb.token_ratios(by, since, side)
        assert expected
        _assert_same(expected, ch.token_ratios(by, since, side))
    with pytest.raises(ValueError):
        ch.token_ratios(("colour",), None, side)


def _prices(upstream: str, model: str, day: int) -> PriceRates | None:
    if model == "claude-mid" and upstream == "up-us":
        return None  # unpriced
    scale = 1.0 + (day - T0 // NS_PER_DAY) * 0.5 + (upstream == "up-us")
    return PriceRates(1e-6 * scale, 4e-6 * scale, 0.5e-6 * scale, 8e-6 * scale, 1e-4)


SPECS = [
    QuerySpec(),
    QuerySpec(by=("tenant",)),
    QuerySpec(by=("model", "status"), sort="errors", limit=5),
    QuerySpec(by=("team",), sort="p95_ms"),
    QuerySpec(by=("attributes.feature",), sort="attributes.feature", limit=50),
    QuerySpec(by=("time:6h",), sort="time:6h", limit=50),
    QuerySpec(by=("upstream", "region"), sort="cost_usd"),
    QuerySpec(by=("canary",), where=(Filter.parse("tenant!=acme"),)),
    QuerySpec(by=("tenant",), where=(Filter.parse("gen_ai.usage.input_tokens>1000"), Filter.parse("model~^gpt"))),
    QuerySpec(by=("served_model",), where=(Filter.parse("feature=null"),), sort="input_tokens"),
    QuerySpec(by=("http_status",), where=(Filter.parse("upstream!=null"), Filter.parse("duration_ms<=500"))),
    QuerySpec(by=("task",), since_ns=T0 + 5_000 * 10**9, until_ns=T0 + 50_000 * 10**9, sort="p50_ms", limit=3),
    QuerySpec(by=("team", "time:1d"), where=(Filter.parse("team=nobody"),)),
]


@pytest.mark.parametrize("spec", SPECS, ids=range(len(SPECS)))
@pytest.mark.parametrize("priced", [False, True], ids=["unpriced", "priced"])
def test_grouped(stores: dict[str, Any], spec: QuerySpec, priced: bool) -> None:
    prices = _prices if priced else None
    emb = stores["embedded"]["query"].grouped(spec, prices)
    ch = stores["clickhouse"]["query"].grouped(spec, prices)
    _assert_same(emb.rows, ch.rows)
    assert (emb.groups_total, emb.spans_total, emb.recorded) == (ch.groups_total, ch.spans_total, ch.recorded)
    if priced and spec.by == ("upstream", "region"):
        assert any(r["cost_usd"] for r in ch.rows)


def test_nothing_recorded(clickhouse: ClickHouseTransport, tmp_path: Path) -> None:
    data = DataDir.at(tmp_path / "empty")
    data.create()
    emb = DuckDBSpanQuery(data).grouped(QuerySpec(by=("tenant",)))
    ch = ClickHouseSpanQuery(clickhouse).grouped(QuerySpec(by=("tenant",)))
    assert (emb.rows, emb.recorded) == (ch.rows, ch.recorded) == ([], False)
    args = (None, None, (), MEASURE_COLUMNS, DIMENSION_COLUMNS)
    assert ClickHouseSliceCandidates(clickhouse).candidate_spans(*args).num_rows == 0
    assert ParquetSliceCandidates(data).candidate_spans(*args).num_rows == 0


def _held(table: pa.Table) -> dict[str, list[Any]]:
    """The columns some row has a value in, each as plain values in start order (the order is stable
    on each store, the same on neither)."""
    order = pa.compute.sort_indices(table, [("start_ns", "ascending")])
    table = table.take(order)
    out = {}
    for name in table.column_names:
        column = table.column(name)
        if column.null_count < len(column):
            out[name] = column.to_pylist()
    return out


@pytest.mark.parametrize(
    "window, where",
    [
        ((None, None), ()),
        ((T0 + 8_000 * 10**9, T0 + 45_000 * 10**9), ()),
        ((None, None), (Filter.parse("tenant=globex"), Filter.parse("team!=chat"))),
        ((None, None), (Filter.parse("model=none-such"),)),
    ],
)
def test_candidate_spans(stores: dict[str, Any], window: tuple[int | None, int | None], where: tuple[Filter]) -> None:
    emb = stores["embedded"]["slices"].candidate_spans(*window, where, MEASURE_COLUMNS, DIMENSION_COLUMNS)
    ch = stores["clickhouse"]["slices"].candidate_spans(*window, where, MEASURE_COLUMNS, DIMENSION_COLUMNS)
    assert emb.num_rows == ch.num_rows
    if not emb.num_rows:
        return
    for name in ch.column_names:  # dimensions and attributes dictionary-encoded, measures as recorded
        embedded_type = emb.schema.field(name).type
        assert ch.schema.field(name).type == embedded_type, name
    _assert_same(_held(emb), _held(ch))
