"""Tail sampling on one generated record, written to the embedded store (Parquet segments) and to
ClickHouse (chdb, the real engine in process) through each one's own sink: the real sampler's passes
(airlock.sampling.stage) decide the same traces on both, the sample report answers the same, the query's
weighted totals agree before anything is pruned, and `airlock sample gc` leaves the same record."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from airlock.config.schema import Config
from airlock.ledger.lines import bill_query, pricing_tables
from airlock.query.spec import QuerySpec
from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.sampling.collect import collect
from airlock.sampling.report import sampling_status
from airlock.sampling.stage import SamplingPass
from airlock.store.clickhouse.energy import ClickHouseCallFacts
from airlock.store.clickhouse.ledger import ClickHouseBillReader
from airlock.store.clickhouse.query import ClickHouseSpanQuery
from airlock.store.clickhouse.sampling import clickhouse_sampling_stores
from airlock.store.clickhouse.sink import ClickHouseSegmentSink
from airlock.store.clickhouse.transport import ClickHouseTransport
from airlock.store.embedded import DataDir, ParquetSegments
from airlock.store.embedded.blobs import INDEX_SCHEMA
from airlock.store.embedded.energy import DuckDBCallFacts
from airlock.store.embedded.ledger import DuckDBBillReader
from airlock.store.embedded.query import DuckDBSpanReader
from airlock.store.embedded.query_engine import DuckDBSpanQuery
from airlock.store.embedded.sampling import FileSamplerLock, SQLiteSamplingState, embedded_sampling_stores
from airlock.store.ledger import RevenueRule
from airlock.store.sampling import SamplingStores
from clickhouse_engine import _chdb_engine_folder, fresh_clickhouse  # noqa: F401 (a fixture)

T0 = 1_700_000_000 * 10**9
WRITERS = ("gw-a", "gw-b")
BATCHES_PER_WRITER = 6
TRACES_PER_BATCH = 40


def config(tmp: Path) -> Config:
    return Config.model_validate(
        {
            "data_dir": str(tmp),
            "upstreams": [
                {
                    "name": "up",
                    "base_url": "http://127.0.0.1:9/v1",
                    "region": "r",
                    "jurisdiction": "EU",
                    "models": [{"name": "m", "prices": [{"input_per_mtok": 1.0, "output_per_mtok": 2.0}]}],
                }
            ],
            "api_keys": [{"tenant": "t", "key_env": "K"}],
            "sampling": {
                "enabled": True,
                "decision_wait_s": 10,
                "span_budget_per_hour": 20_000,
                "rate_window_s": 60,
                "replay_reserve": 0.2,
            },
        }
    )


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Batch:
    writer: str
    seq: int
    spans: pa.Table
    hops: pa.Table
    blob_index: pa.Table


def generated_batches(seed: int = 5) -> list[Batch]:
    """Two writers' batches of three-span traces (two tenants, a few errors, one slow): each call names its
    own request payload and a response payload shared by every trace of its batch (deduplicated, so it
    stays while any trace naming it is kept), indexed in the batch that first wrote it."""
    rng = random.Random(seed)
    out = []
    for w, writer in enumerate(WRITERS):
        for seq in range(BATCHES_PER_WRITER):
            spans: list[dict[str, Any]] = []
            digests: list[str] = []
            shared = _digest(f"{writer}.{seq}.response")
            digests.append(shared)
            for j in range(TRACES_PER_BATCH):
                t = T0 + ((seq * TRACES_PER_BATCH + j) * 2 + w) * 10**7
                trace = f"{rng.getrandbits(128):032x}"
                error = rng.random() < 0.03
                for i in range(3):  # three calls under a client's span (no root recorded)
                    request = _digest(f"{trace}.{i}")
                    end = t + (i + 1) * 10**6 + (5 * 10**9 if j == 7 and i == 1 else 0)
                    digests.append(request)
                    spans.append(
                        {
                            "trace_id": trace,
                            "span_id": f"{rng.getrandbits(64):016x}",
                            "parent_span_id": "c1e47a0000000000",
                            "kind": "model.chat",
                            "start_ns": t + i * 10**6,
                            "end_ns": end,
                            "duration_ms": (end - t - i * 10**6) / 1e6,
                            "status": "error" if error and i == 2 else "ok",
                            "airlock.tenant": "busy" if j % 8 else "quiet",
                            "gen_ai.request.model": "m",
                            "airlock.upstream": "up",
                            "airlock.upstream.model": "m",
                            "gen_ai.usage.input_tokens": 1000 + j,
                            "gen_ai.usage.output_tokens": 100 + i,
                            "airlock.payload.request": request,
                            "airlock.payload.response": shared,
                            "attributes": {"feature": "search" if j % 3 else "chat"},
                        }
                    )
            # the record keeps no row order on ClickHouse: the feed reads a batch by start, then span id
            spans.sort(key=lambda r: (r["start_ns"], r["span_id"]))
            hops = [{"trace_id": r["trace_id"], "span_id": r["span_id"], "attempt": 1} for r in spans]
            index = [
                {
                    "digest": d,
                    "pack": f"{writer}.pack",
                    "frame_offset": k * 64,
                    "frame_length": 64,
                    "inner_offset": 0,
                    "length": 10,
                }
                for k, d in enumerate(digests)
            ]
            out.append(
                Batch(
                    writer,
                    seq,
                    pa.Table.from_pylist(spans, schema=SPAN_SCHEMA),
                    pa.Table.from_pylist(hops, schema=HOP_SCHEMA),
                    pa.Table.from_pylist(index, schema=INDEX_SCHEMA),
                )
            )
    return out


@dataclass
class Recorded:
    """One record on both stores, and the data directories whose state each sampler keeps."""

    cfg: Config
    embedded: DataDir
    embedded_stores: SamplingStores
    clickhouse: ClickHouseTransport
    clickhouse_state: DataDir
    clickhouse_stores: SamplingStores


@pytest.fixture
def recorded(tmp_path: Path, _chdb_engine_folder: Path) -> Iterator[Recorded]:  # noqa: F811
    data = DataDir.at(tmp_path / "embedded")
    data.create()
    state = DataDir.at(tmp_path / "clickhouse-state")  # the sampler's state: PostgreSQL on a deployment
    state.create()
    segments = ParquetSegments(data)
    for transport in fresh_clickhouse(_chdb_engine_folder):
        sink = ClickHouseSegmentSink(transport)
        for b in generated_batches():
            segments.write(b.writer, b.seq, b.spans, b.hops, b.blob_index)
            sink.write(b.writer, b.seq, b.spans, b.hops, b.blob_index)
        stores = clickhouse_sampling_stores(
            transport, lambda: SQLiteSamplingState(state), lambda: FileSamplerLock.take(state), quiet_s=0
        )
        yield Recorded(config(data.root), data, embedded_sampling_stores(data), transport, state, stores)


def _passes(r: Recorded, now_ns: int) -> tuple[list[Any], list[Any]]:
    embedded = SamplingPass(r.cfg, r.embedded, max_spans_per_pass=900).run_until_caught_up(now_ns)
    clickhouse = SamplingPass(
        r.cfg, r.clickhouse_state, max_spans_per_pass=900, stores=r.clickhouse_stores
    ).run_until_caught_up(now_ns)
    return embedded, clickhouse


def _decided(results: list[Any]) -> list[tuple[Any, ...]]:
    return sorted((d.trace_id, d.keep, d.reason, d.traces, d.spans, d.reserve) for p in results for d in p.decisions)


def _normal(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows comparable across engines: floats rounded (sums in another order), in a total order (the
    reports order by counts, leaving ties in either engine's order)."""
    out = [{k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()} for row in rows]
    return sorted(out, key=lambda row: sorted((k, str(v)) for k, v in row.items()))


def _grouped(r: Recorded) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    spec = QuerySpec(by=("airlock.tenant",), sort="airlock.tenant")
    return (
        _normal(DuckDBSpanQuery(r.embedded).grouped(spec).rows),
        _normal(ClickHouseSpanQuery(r.clickhouse).grouped(spec).rows),
    )


def _billed(r: Recorded) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The bill's totals by tenant and feature (money and tasks weighted by the sampler's decisions), but
    for the storage line: what the record takes on disk differs between the stores by design."""
    query = bill_query(r.cfg)  # the prices of the config, no posted items
    out = []
    for reader in (DuckDBBillReader(r.embedded), ClickHouseBillReader(r.clickhouse)):
        bill = reader.open_bill(query)
        try:
            groups = bill.grouped(("tenant", "feature"), RevenueRule(None, {}))
        finally:
            bill.close()
        rows = [{**g.key, "tasks": g.tasks, "inference": g.by_category.get("inference")} for g in groups]
        out.append(_normal(rows))
    return out[0], out[1]


def _call_weights(r: Recorded) -> tuple[dict[str, float], dict[str, float]]:
    """The energy report's call facts: each call's weight (the traces it stands for), by span."""
    out = []
    for reader in (DuckDBCallFacts(r.embedded), ClickHouseCallFacts(r.clickhouse)):
        facts = reader.call_facts(0, 2**62, pricing_tables(r.cfg))
        out.append(dict(zip(facts["span_id"].to_pylist(), facts["weight"].to_pylist(), strict=True)))
    return out[0], out[1]


def _record(r: Recorded) -> tuple[set[tuple[str, str]], set[tuple[str, str]], set[tuple[str, str]], set[str]]:
    embedded = DuckDBSpanReader(r.embedded)
    spans_e = {(x["trace_id"], x["span_id"]) for x in embedded.sql("SELECT trace_id, span_id FROM spans")}
    hops_e = {(x["trace_id"], x["span_id"]) for x in embedded.sql("SELECT trace_id, span_id FROM hops")}
    ch = r.clickhouse
    spans_c = {(x["trace_id"], x["span_id"]) for x in ch.query_rows("SELECT trace_id, span_id FROM spans")}
    hops_c = {(x["trace_id"], x["span_id"]) for x in ch.query_rows("SELECT trace_id, span_id FROM hops")}
    assert spans_e == spans_c and hops_e == hops_c
    index_e = r.embedded_stores.collector.indexed_payloads()
    assert index_e == r.clickhouse_stores.collector.indexed_payloads()
    return spans_e, hops_e, spans_c, index_e


def test_the_sampler_decides_reports_and_prunes_the_same_on_both_stores(recorded: Recorded) -> None:
    r = recorded
    # a first pass while the last traces are still open, then one after the traffic: cursors and waiting
    # traces carried between passes on each store's state
    first_e, first_c = _passes(r, T0 + 4 * 10**9)
    assert _decided(first_e) == _decided(first_c)
    assert sum(p.pending for p in first_e[-1:]) == sum(p.pending for p in first_c[-1:]) > 0
    assert sum(p.segments_read for p in first_e) == sum(p.segments_read for p in first_c) == 12
    late_e, late_c = _passes(r, T0 + 10**12)
    decided = _decided(first_e + late_e)
    assert decided == _decided(first_c + late_c)
    total = len(WRITERS) * BATCHES_PER_WRITER * TRACES_PER_BATCH
    assert len({d[0] for d in decided}) == total
    kept = {d[0] for d in decided if d[1]}
    reserve = {d[0] for d in decided if d[5]}
    assert 0 < len(kept) < total // 2 and reserve  # some dropped, some in the replay reserve

    # every decision row as the stores keep them, and the report's aggregates
    e, c = r.embedded_stores.report, r.clickhouse_stores.report
    assert _normal(e.decisions_of("")) == _normal(c.decisions_of(""))
    prefix = decided[0][0][:3]
    assert _normal(e.decisions_of(prefix)) == _normal(c.decisions_of(prefix)) != []
    for method in ("by_outcome_and_reason", "by_key", "drops"):
        assert _normal(getattr(e, method)()) == _normal(getattr(c, method)()), method
    assert e.newest_start_ns() == c.newest_start_ns() is not None
    assert _normal(e.kept_by_hour(T0)) == _normal(c.kept_by_hour(T0))
    assert e.early_decisions() == c.early_decisions()
    status_e = sampling_status(r.embedded, 20_000, stores=r.embedded_stores).as_dict()
    status_c = sampling_status(r.clickhouse_state, 20_000, stores=r.clickhouse_stores).as_dict()
    for key in ("passes", "pending", "unread_segments", "skipped_segments", "early", "budget_per_hour"):
        assert status_e[key] == status_c[key], key
    for key in ("by_reason", "keys", "drops", "kept_spans_by_hour"):
        assert _normal(status_e[key]) == _normal(status_c[key]), key
    assert status_e["totals"].keys() == status_c["totals"].keys()
    for key, (exact, estimated) in status_e["totals"].items():
        assert status_c["totals"][key] == (exact, pytest.approx(estimated)), key

    # the verdicts compaction and gc ask, and the query's weights before anything is pruned
    ids = pa.array([*sorted({d[0] for d in decided}), "0" * 32])  # one the sampler never saw
    v_e = r.embedded_stores.retention.verdicts(ids)
    v_c = r.clickhouse_stores.retention.verdicts(ids)
    assert v_e is not None and v_c is not None
    assert sorted(v_e.to_pylist(), key=lambda x: x["trace_id"]) == v_c.to_pylist()
    before_e, before_c = _grouped(r)
    assert before_e == before_c
    bill_e, bill_c = _billed(r)
    assert bill_e == bill_c
    assert sum(row["tasks"] for row in bill_c) != total  # tasks weighted too
    calls_e, calls_c = _call_weights(r)
    assert calls_e == calls_c and set(calls_c.values()) != {1.0}
    assert sum(row["spans"] for row in before_c) != 3 * total  # weighted by the decisions, not raw counts

    # `airlock sample gc`: the same spans and hops go, the same payloads are released
    spans_before = len(_record(r)[0])
    gc_e = collect(r.embedded, r.embedded_stores)
    gc_c = collect(r.clickhouse_state, r.clickhouse_stores)
    dropped_outside_reserve = {d[0] for d in decided if not d[1] and not d[5]} - kept
    assert gc_e.spans_removed == gc_c.spans_removed == 3 * len(dropped_outside_reserve) > 0
    assert gc_e.blobs_released == gc_c.blobs_released > 0
    spans_after, hops_after, _, index_after = _record(r)
    assert len(spans_after) == spans_before - gc_c.spans_removed
    assert (
        {t for t, _ in spans_after} == {t for t, _ in hops_after} == {d[0] for d in decided} - dropped_outside_reserve
    )
    assert gc_c.pack_bytes_after < gc_c.pack_bytes_before  # the frames the index still locates
    after_e, after_c = _grouped(r)
    assert after_e == after_c == before_c  # pruning what was weighted 0 changes no total
    assert _billed(r) == (bill_c, bill_c)
    assert len(index_after) > 0
