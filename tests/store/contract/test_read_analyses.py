"""One generated record, written to the embedded store (Parquet segments) and to ClickHouse (chdb, the
real engine in process), and every analysis reader beyond the core ones answering the same on both:
the bill (lines, grouped totals, unpriced calls, a task's lines and tenants), who owns a trace, the
energy report's call facts and roll-up, replay's selection, the OTLP export feed batch by batch, and
the demo record."""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from airlock.config.schema import Config
from airlock.energy.report import energy_report
from airlock.ledger import build_bill
from airlock.ledger.lines import pricing_tables
from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.store import build_stores
from airlock.store.clickhouse.demo import ClickHouseDemoRecord
from airlock.store.clickhouse.energy import ClickHouseCallFacts
from airlock.store.clickhouse.export import ClickHouseExportFeed
from airlock.store.clickhouse.ledger import ClickHouseBillReader, ClickHouseRecordOwners
from airlock.store.clickhouse.replay import ClickHouseReplaySelection
from airlock.store.clickhouse.sink import ClickHouseSegmentSink
from airlock.store.clickhouse.transport import ClickHouseTransport
from airlock.store.embedded import DataDir, ParquetSegments
from airlock.store.embedded.demo import DuckDBDemoRecord
from airlock.store.embedded.energy import DuckDBCallFacts
from airlock.store.embedded.export import SegmentFeed
from airlock.store.embedded.ledger import DuckDBRecordOwners, SQLiteLedgerItems
from airlock.store.embedded.query import BlobReader
from airlock.store.embedded.replay import DuckDBReplaySelection
from airlock.store.export import Cursor, ExportFeed
from airlock.store.interface import TraceFilter
from airlock.store.ledger import LedgerItemRecord, RevenueRule
from clickhouse_engine import _chdb_engine_folder, fresh_clickhouse  # noqa: F401 (a fixture)
from ledger.ledger_record import T0, config

TENANTS = ("acme", "beta", None)
WRITERS = ("gw-a", "gw-b")
SPANS_PER_BATCH = 9


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def generated_spans(traces: int = 48, seed: int = 13) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Spans and hops of a small but varied record: three tenants (one of them none), tasks over
    several traces, features on some spans only, chat and embedding calls, calls by a route alias and
    by a model's own name, reported and local-only usage, errors, cancellations and rejections,
    failed-over attempts, cost attributes (good, out of range, not a number), sampling stamps, OTLP
    spans and a replay run with a judge. Every start time is distinct."""
    rng = random.Random(seed)
    spans: list[dict[str, Any]] = []
    hops: list[dict[str, Any]] = []
    for t in range(traces):
        trace_id = f"{t + 1:032x}"
        tenant = TENANTS[t % 3]
        task = f"task-{t // 3}" if t % 4 else None
        for k in range(1 + t % 3):
            n = t * 10 + k
            start = T0 + t * 10**9 + k * 10**8
            status = rng.choice(("ok", "ok", "ok", "error", "cancelled"))
            upstream = rng.choice(("up-a", "up-b", None)) if status == "error" else rng.choice(("up-a", "up-b"))
            reported = rng.random() < 0.7
            inp, out = rng.randint(10, 5000), rng.randint(0, 800)
            attributes = {"feature": f"feat-{t // 3 % 4}"} if k == 0 and t % 5 else {}  # one feature a task
            if rng.random() < 0.3:
                attributes["airlock.cost.search"] = f"{rng.randint(1, 90) / 100}"
            if rng.random() < 0.1:
                attributes["airlock.cost.retrieval"] = rng.choice(("nan", "2e6", "-1", "0.125"))
            if rng.random() < 0.2:
                attributes["task_type"] = rng.choice(("summarise", "classify"))
            received = t % 11 == 5
            row: dict[str, Any] = {
                "trace_id": trace_id,
                "span_id": f"{n + 1:016x}",
                "request_id": f"req-{n}",
                "kind": "model.embedding" if n % 7 == 3 else "model.chat",
                "start_ns": start,
                "end_ns": start + rng.randint(50, 3000) * 10**6,
                "ttft_ms": float(rng.randint(5, 400)),
                "status": status,
                "airlock.tenant": tenant,
                "airlock.task": task,
                "airlock.user": f"user-{t % 5}",
                "airlock.route": rng.choice(("chat", "chat", "m-large")) if upstream else None,
                "airlock.upstream": upstream,
                "airlock.upstream.region": {"up-a": "eu-west-1", "up-b": "us-east-1"}.get(upstream or ""),
                "airlock.upstream.model": {"up-a": "m-large", "up-b": "m-large-v2"}.get(upstream or ""),
                "gen_ai.request.model": "chat",
                "gen_ai.usage.input_tokens": inp if reported else None,
                "gen_ai.usage.output_tokens": out if reported else None,
                "gen_ai.usage.cache_read.input_tokens": rng.choice((None, rng.randint(0, inp))),
                "airlock.usage.reported": reported,
                "airlock.local.input_tokens": inp + rng.randint(-5, 5),
                "airlock.local.output_tokens": out,
                "airlock.attempts": 2 if n % 4 == 1 else 1,
                "airlock.sample.rate": 4.0 if t % 9 == 2 else None,
                "airlock.source": "otlp" if received else None,
                "airlock.payload.upstream_request": _digest(f"req-{n}") if n % 4 else None,
                "airlock.payload.request_bytes": rng.randint(100, 9000),
                "airlock.payload.response_bytes": rng.randint(100, 9000),
                "attributes": attributes,
            }
            row["duration_ms"] = (row["end_ns"] - start) / 1e6
            spans.append(row)
            if row["airlock.attempts"] == 2 and upstream:
                other = "up-b" if upstream == "up-a" else "up-a"
                for attempt, (up, outcome) in enumerate(((other, "timeout"), (upstream, "ok")), start=1):
                    hops.append(
                        {
                            "trace_id": trace_id,
                            "span_id": row["span_id"],
                            "attempt": attempt,
                            "upstream": up,
                            "start_ns": start + attempt,
                            "end_ns": start + attempt + 1000,
                            "outcome": outcome,
                        }
                    )
    originals = [s for s in spans if s["kind"] == "model.chat" and s["airlock.source"] is None][:6]
    for i, original in enumerate(originals):
        start = T0 + (traces + i) * 10**9
        for role in ("candidate", "judge") if i == 0 else ("candidate",):
            spans.append(
                original
                | {
                    "trace_id": f"{0xF000 + i:032x}",
                    "span_id": f"{0xF000 + i * 2 + (role == 'judge'):016x}",
                    "start_ns": start + (role == "judge"),
                    "end_ns": start + 10**9,
                    "duration_ms": 900.0 + i,
                    "airlock.replay.run": "r1",
                    "airlock.replay.of": original["span_id"],
                    "airlock.payload.upstream_request": _digest(f"replay-{i}-{role}"),
                    "attributes": {"replay_role": role},
                }
            )
    return spans, hops


def batches(spans: list[dict[str, Any]]) -> list[tuple[str, int, list[dict[str, Any]]]]:
    """The spans as two writers' batches, each writer's in start order (as a writer records them)."""
    out = []
    for w, writer in enumerate(WRITERS):
        mine = sorted((s for i, s in enumerate(spans) if i % 2 == w), key=lambda s: s["start_ns"])
        for seq, first in enumerate(range(0, len(mine), SPANS_PER_BATCH)):
            out.append((writer, seq, mine[first : first + SPANS_PER_BATCH]))
    return out


@dataclass
class Record:
    cfg: Config
    data: DataDir
    clickhouse: ClickHouseTransport


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory, _chdb_engine_folder: Path) -> Iterator[Record]:  # noqa: F811
    """The record, written once for the module's tests (they only read it): on chdb, or on
    AIRLOCK_TEST_CLICKHOUSE_URL's server when that is set."""
    for clickhouse in fresh_clickhouse(_chdb_engine_folder):
        yield _write_record(tmp_path_factory.mktemp("analyses"), clickhouse)


def _write_record(tmp_path: Path, clickhouse: ClickHouseTransport) -> Record:
    profile = [{"batch": 1, "prefill_j_per_token": 0.1, "decode_j_per_token": 1.0}]
    cfg = config(
        tmp_path,
        ledger={
            "telemetry_storage": {"usd_per_gib_month": 0.0},  # what each store holds differs, by design
            "failed_attempts_billed": ["timeout"],
            "revenue_per_task": 0.05,
            "revenue_per_task_by_feature": {"feat-1": 0.2},
            "electricity": {"usd_per_kwh": 0.3},
        },
        energy={"profiles": [{"model": "m-large", "tier": "large", "points": profile, "idle_share": 0.0}]},
    )
    data = DataDir.at(cfg.data_dir)
    data.create()
    spans, hops = generated_spans()
    segments, sink = ParquetSegments(data), ClickHouseSegmentSink(clickhouse)
    for writer, seq, rows in batches(spans):
        ids = {s["span_id"] for s in rows}
        span_table = pa.Table.from_pylist(rows, schema=SPAN_SCHEMA)
        hop_table = pa.Table.from_pylist([h for h in hops if h["span_id"] in ids], schema=HOP_SCHEMA)
        segments.write(writer, seq, span_table, hop_table)
        sink.write(writer, seq, span_table, hop_table)
    items = SQLiteLedgerItems(data.state_db)
    try:
        items.insert_all(
            [
                LedgerItemRecord("acme", "i1", "search", 1.25, T0 + 5, "sha1", trace_id=f"{4:032x}"),
                LedgerItemRecord("acme", "i2", "human_review", 3.0, T0 + 6, "sha2", task="task-1"),
                # names beta's trace: takes neither its task nor its feature
                LedgerItemRecord("acme", "i3", "search", 0.5, T0 + 7, "sha3", trace_id=f"{2:032x}"),
                LedgerItemRecord("beta", "i4", "other", 2.0, T0 + 8, "sha4", feature="feat-9"),
            ]
        )
    finally:
        items.close()
    return Record(cfg, data, clickhouse)


def rounded(value: Any) -> Any:
    """Floats to 9 significant digits (sums taken in another order differ in the last bits), deeply."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return rounded(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(rounded(v) for v in value)
    return value


def as_set(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(repr(sorted(rounded(r).items())) for r in rows)


def test_the_bill_is_the_same(record: Record) -> None:
    embedded = build_bill(record.cfg)
    on_clickhouse = build_bill(
        record.cfg, stores=replace(build_stores(record.cfg), bills=ClickHouseBillReader(record.clickhouse))
    )
    try:
        lines = embedded.lines()
        assert {line["source"] for line in lines} == {"span", "hop", "attribute", "item", "energy"}
        assert len(lines) > 100
        assert as_set(on_clickhouse.lines()) == as_set(lines)
        assert on_clickhouse.categories() == embedded.categories()
        assert rounded(on_clickhouse.unpriced()) == rounded(embedded.unpriced())
        revenue = RevenueRule(0.05, {"feat-1": 0.2})
        for by in ([], ["tenant"], ["feature", "category"], ["task"], ["day", "model", "upstream"], ["user"]):
            assert rounded(on_clickhouse.grouped(by, revenue)) == rounded(embedded.grouped(by, revenue)), by
        assert rounded(on_clickhouse.grouped(["tenant"], RevenueRule(None, {}))) == rounded(
            embedded.grouped(["tenant"], RevenueRule(None, {}))
        )
        for task in ("task-1", "task-4", f"{1:032x}", "nothing"):
            assert on_clickhouse.task_tenants(task) == embedded.task_tenants(task)
            for tenant in ("acme", "beta", None):
                assert rounded(on_clickhouse.task_lines(task, tenant)) == rounded(embedded.task_lines(task, tenant))
    finally:
        embedded.close()
        on_clickhouse.close()


def test_record_owners_are_the_same(record: Record) -> None:
    traces = [f"{t:032x}" for t in range(1, 8)] + ["unknown"]
    tasks = ["task-1", "task-2", f"{1:032x}", "unknown"]
    embedded = DuckDBRecordOwners(record.data).owners(traces, tasks)
    assert embedded.traces and embedded.tasks
    assert ClickHouseRecordOwners(record.clickhouse).owners(traces, tasks) == embedded


def test_energy_is_the_same(record: Record) -> None:
    pricing = pricing_tables(record.cfg)
    embedded = DuckDBCallFacts(record.data).call_facts(0, 2**62, pricing)
    on_clickhouse = ClickHouseCallFacts(record.clickhouse).call_facts(0, 2**62, pricing)
    assert embedded.num_rows > 50
    assert on_clickhouse.schema == embedded.schema
    assert on_clickhouse.to_pylist() == embedded.to_pylist()
    reader = ClickHouseCallFacts(record.clickhouse)
    for by in (["model_tier", "cache"], ["tenant", "task_type"], ["upstream", "source"]):
        a = energy_report(record.cfg, by).as_dict()
        b = energy_report(record.cfg, by, stores=replace(build_stores(record.cfg), call_facts=reader)).as_dict()
        assert a["rows"] and rounded(b) == rounded(a)


def test_replay_selection_is_the_same(record: Record) -> None:
    embedded = DuckDBReplaySelection(record.data)
    on_clickhouse = ClickHouseReplaySelection(record.clickhouse, BlobReader(record.data))
    filters = [
        TraceFilter(),
        TraceFilter(tenant="acme"),
        TraceFilter(status="error", since_ns=T0 + 10 * 10**9),
        TraceFilter(attributes={"feature": "feat-1"}),
        TraceFilter(attributes={"route": "m-large", "upstream": "up-b"}),
    ]
    for flt in filters:
        for limit in (None, 5, 0):
            assert on_clickhouse.traces(flt, limit) == embedded.traces(flt, limit), (flt, limit)
    chosen = [*embedded.traces(TraceFilter(), None).trace_ids, "unknown"]
    assert len(chosen) > 40
    kinds = ["model.chat", "model.embedding"]
    assert on_clickhouse.model_calls(chosen, kinds) == embedded.model_calls(chosen, kinds)
    pairs = sorted(map(repr, embedded.recorded_pairs("r1")))
    assert len(pairs) == 6  # the judge's call is not one of them
    assert sorted(map(repr, on_clickhouse.recorded_pairs("r1"))) == pairs


def _walk(feed: ExportFeed, limit: int) -> list[tuple[list[str], dict[str, tuple[int, int]]]]:
    """Every batch to the end: its span ids and each writer's cursor after it (seq done, rows of the next)."""
    cursors: dict[str, Cursor] = {}
    out = []
    for _ in range(100):
        batch = feed.next_batch(cursors, limit)
        if batch.empty:
            return out
        assert batch.since == {w: cursors.get(w) for w in batch.advance}
        assert batch.resent == 0
        cursors.update(batch.advance)
        out.append(
            ([r["span_id"] for r in batch.rows], {w: (c.seq_done, c.partial_rows) for w, c in batch.advance.items()})
        )
    raise AssertionError("the feed never ended")


def test_the_export_feed_is_the_same(record: Record) -> None:
    embedded, on_clickhouse = SegmentFeed(record.data), ClickHouseExportFeed(record.clickhouse)
    assert on_clickhouse.ends() == embedded.ends()
    for limit in (7, 9, 1000):
        walked = _walk(embedded, limit)
        assert _walk(on_clickhouse, limit) == walked
    first_e = embedded.next_batch({}, 20).rows
    first_c = on_clickhouse.next_batch({}, 20).rows
    assert first_c == first_e  # whole span rows, as the exporter encodes them


def test_the_demo_record_is_the_same(record: Record) -> None:
    embedded = DuckDBDemoRecord(record.data)
    on_clickhouse = ClickHouseDemoRecord(record.clickhouse)
    assert on_clickhouse.spans_recorded() == embedded.spans_recorded()
    assert rounded(on_clickhouse.calls_by_region()) == rounded(embedded.calls_by_region())
    assert on_clickhouse.hop_outcomes() == embedded.hop_outcomes()
    assert on_clickhouse.first_failed_received_trace() == embedded.first_failed_received_trace() is not None
    for trace in (f"{4:032x}", f"{1:032x}", "unknown"):  # one span each (which of several is not said)
        assert on_clickhouse.upstream_request_digest(trace) == embedded.upstream_request_digest(trace)
    assert on_clickhouse.token_ratios(["model", "tenant"], None, "input") == embedded.token_ratios(
        ["model", "tenant"], None, "input"
    )
