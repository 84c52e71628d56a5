"""The sampler pass through a real data directory: span segments in, decisions and drop summaries out,
a cursor in SQLite; compaction then drops what was not kept and stamps what was."""

from __future__ import annotations

import fcntl
import hashlib
import os
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from airlock.config.schema import Config
from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.sampling.report import sampling_status
from airlock.sampling.retention import SampledRetention
from airlock.sampling.stage import SamplingPass
from airlock.store.embedded import DataDir, DuckDBSpanReader, ParquetSegments
from airlock.store.embedded.ledger import SQLiteLedgerItems
from airlock.store.embedded.query_engine import DuckDBSpanQuery
from airlock.store.embedded.sampling import SampledReader
from airlock.store.embedded.segments import live_segments

T0 = 1_700_000_000 * 10**9


def config(tmp: Path, **sampling: Any) -> Config:
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
            "sampling": {"enabled": True, "decision_wait_s": 10, **sampling},
        }
    )


def trace_rows(rng: random.Random, t: int, tenant: str, error: bool) -> list[dict[str, Any]]:
    tid = f"{rng.getrandbits(128):032x}"
    rows = []
    for i in range(3):  # three calls under a client's span (no root recorded): decided after the wait
        rows.append(
            {
                "trace_id": tid,
                "span_id": f"{rng.getrandbits(64):016x}",
                "parent_span_id": "c1e47a0000000000",
                "kind": "model.chat",
                "start_ns": t + i * 10**6,
                "end_ns": t + (i + 1) * 10**6,
                "status": "error" if error and i == 2 else "ok",
                "airlock.tenant": tenant,
                "gen_ai.request.model": "m",
                "airlock.upstream": "up",
                "gen_ai.usage.input_tokens": 1000,
                "gen_ai.usage.output_tokens": 100,
                "attributes": {"feature": "search"},
            }
        )
    return rows


def write_traffic(data: DataDir, segments: ParquetSegments, n_segments: int, seed: int = 1) -> dict[str, int]:
    rng = random.Random(seed)
    traces: dict[str, int] = {}
    for seq in range(n_segments):
        rows: list[dict[str, Any]] = []
        for j in range(100):
            tenant = "busy" if j % 10 else "quiet"
            rows += trace_rows(rng, T0 + (seq * 100 + j) * 10**7, tenant, error=rng.random() < 0.02)
            traces[rows[-1]["trace_id"]] = int(any(r["status"] == "error" for r in rows[-3:]))
        hops = [{"trace_id": r["trace_id"], "span_id": r["span_id"], "attempt": 1} for r in rows]
        segments.write(
            "w1", seq, pa.Table.from_pylist(rows, schema=SPAN_SCHEMA), pa.Table.from_pylist(hops, schema=HOP_SCHEMA)
        )
    return traces


def test_pass_decides_traces_writes_decisions_and_summaries_and_compaction_prunes(tmp_path: Path) -> None:
    data = DataDir.at(tmp_path)
    data.create()
    cfg = config(tmp_path, span_budget_per_hour=100_000, rate_window_s=60)  # ~1 in 10 of this traffic
    segments = ParquetSegments(data, SampledRetention(data))
    traces = write_traffic(data, segments, 20)
    # Nothing is merged before the sampler has read it.
    assert segments.compact("w1", 16) == 0
    stage = SamplingPass(cfg, data)
    first = stage.run(now_ns=T0 + 15 * 10**9)  # some traces are not complete yet
    assert first.spans_read == 20 * 300 and 0 < first.pending < len(traces)
    # Segments where a waiting trace began are held back from compaction (each segment is 1 s of traffic).
    assert SampledRetention(data).compactable_through("w1") == 4
    assert segments.compact("w1", 16) == 0
    second = SamplingPass(cfg, data).run(now_ns=T0 + 10**12)  # a fresh process picks up the waiting ones
    assert second.spans_read == 0 and second.pending == 0
    assert SampledRetention(data).compactable_through("w1") == 19
    decided = first.decisions + second.decisions
    assert sorted(d.trace_id for d in decided) == sorted(traces)
    kept = {d.trace_id: d for d in decided if d.keep}
    assert 0 < len(kept) < len(traces) // 2
    assert all(tid in kept and kept[tid].reason == "error" for tid, err in traces.items() if err)

    status = sampling_status(data, 100_000)
    assert status.pending == 0 and status.unread_segments == 0
    exact = {k["key"]: k["traces"] for k in status.keys}
    assert exact == {"busy|m": 1800, "quiet|m": 200}
    assert status.totals["spans"][0] == 6000  # exact, from decisions and drop summaries
    assert abs(status.totals["traces"][1] - 2000) < 0.1 * 2000  # estimated from the kept ones
    drops = sum(d["traces"] for d in status.drops)
    assert drops == len(traces) - len(kept)
    assert abs(status.totals["cost"][0] - 6000 * (1000 * 1.0 + 100 * 2.0) / 1e6) < 1e-9

    # Compaction now merges, dropping the spans and hops of dropped traces and stamping kept ones.
    assert segments.compact("w1", 16) == 20
    assert [s.path.name for s in live_segments(data.spans)] == ["w1.00000000-00000019.parquet"]
    reader = DuckDBSpanReader(data)
    rows = reader.sql('SELECT trace_id, "airlock.sample.rate" AS rate, "airlock.sample.reason" AS reason FROM spans')
    assert {r["trace_id"] for r in rows} == set(kept)
    assert len(rows) == 3 * len(kept)
    for r in rows:
        assert r["rate"] == kept[r["trace_id"]].adjusted_count and r["reason"] == kept[r["trace_id"]].reason
    assert {h["trace_id"] for h in reader.sql("SELECT DISTINCT trace_id FROM hops")} == set(kept)
    # the sampled view joins kept traces' spans with their adjusted counts
    sampled = SampledReader(data).sql("SELECT count(DISTINCT trace_id) AS n FROM sampled_spans")[0]["n"]
    assert sampled == len(kept)


def test_replay_reserve_keeps_dropped_traces_spans(tmp_path: Path) -> None:
    data = DataDir.at(tmp_path)
    data.create()
    segments = ParquetSegments(data, SampledRetention(data))
    traces = write_traffic(data, segments, 16, seed=2)
    SamplingPass(config(tmp_path, span_budget_per_hour=500, replay_reserve=1.0), data).run(T0 + 10**12)
    assert segments.compact("w1", 16) == 16
    n = DuckDBSpanReader(data).sql("SELECT count(DISTINCT trace_id) AS n FROM spans")[0]["n"]
    assert n == len(traces)  # every dropped trace is in the reserve: nothing pruned
    status = sampling_status(data)
    assert any(r["outcome"] == "dropped (replay reserve)" for r in status.by_reason)


def test_a_crashed_pass_is_replayed_whole(tmp_path: Path) -> None:
    """A pass that wrote its files but did not commit is run again with the same result."""
    data = DataDir.at(tmp_path)
    data.create()
    segments = ParquetSegments(data, SampledRetention(data))
    write_traffic(data, segments, 4, seed=3)
    cfg = config(tmp_path, span_budget_per_hour=500)
    stage = SamplingPass(cfg, data)
    original = stage.sampler.decide

    def crash(*args: Any, **kwargs: Any) -> Any:
        original(*args, **kwargs)
        raise OSError("disk full")

    stage.sampler.decide = crash  # type: ignore[method-assign]
    with pytest.raises(OSError):
        stage.run(T0 + 10**12)
    result = stage.run(T0 + 10**12)  # the same object, reloaded from the committed state
    assert result.spans_read == 4 * 300 and result.decided == 400
    assert sampling_status(data).totals["traces"][0] == 400


def test_gc_drops_dropped_traces_everywhere_and_releases_only_unreferenced_payloads(tmp_path: Path) -> None:
    from airlock.errors import GatewayRunning
    from airlock.sampling.collect import collect
    from airlock.store.embedded import BlobReader, PackWriter

    data = DataDir.at(tmp_path)
    data.create()
    blobs = PackWriter(data.blobs, "w1")
    rng = random.Random(4)
    shared = b'{"system": "the same prompt in every trace"}' * 20
    unique: dict[str, str] = {}
    for seq in range(4):
        rows = []
        for j in range(50):
            rows += trace_rows(rng, T0 + (seq * 50 + j) * 10**7, "busy", error=False)
        payloads = [rng.randbytes(2000).hex().encode() for _ in range(50)]
        digests = blobs.put_many([shared, *payloads])
        for n, row in enumerate(rows):
            row["airlock.payload.request"] = digests[0]
            row["airlock.payload.response"] = digests[1 + n // 3]
            unique[row["trace_id"]] = digests[1 + n // 3]
        index = blobs.index_table()
        blobs.index_written(index.num_rows)
        ParquetSegments(data).write(
            "w1", seq, pa.Table.from_pylist(rows, schema=SPAN_SCHEMA), HOP_SCHEMA.empty_table(), index
        )
    blobs.close()
    SamplingPass(config(tmp_path, span_budget_per_hour=4000), data).run(T0 + 10**12)  # p ~ 1/10
    decisions = SampledReader(data).sql("SELECT trace_id, keep, reason, probability FROM sample_decisions")
    kept = {d["trace_id"] for d in decisions if d["keep"]}
    assert 0 < len(kept) < 100

    from airlock.query import QuerySpec, run_query

    def traces_queried() -> int:
        return run_query(DuckDBSpanQuery(data), QuerySpec(by=("trace_id",), limit=1)).groups_total

    assert traces_queried() == 200  # builds the query copies of the segments gc is about to rewrite

    lock = os.open(data.run / "w1.lock", os.O_RDWR | os.O_CREAT)  # a live writer holds its lock
    fcntl.flock(lock, fcntl.LOCK_EX)
    with pytest.raises(GatewayRunning):
        collect(data)
    os.close(lock)

    result = collect(data)
    assert traces_queried() == len(kept)  # regression: the copies of the rewritten segments were stale
    assert result.spans_removed == 3 * (200 - len(kept)) and result.blobs_released == 200 - len(kept)
    assert result.pack_bytes_after < result.pack_bytes_before
    reader = DuckDBSpanReader(data)
    assert {r["trace_id"] for r in reader.sql("SELECT DISTINCT trace_id FROM spans")} == kept
    found = BlobReader(data).get_many([*unique.values(), hashlib.sha256(shared).hexdigest()])
    assert isinstance(found[hashlib.sha256(shared).hexdigest()], bytes)  # shared with kept traces: stays
    for tid, digest in unique.items():
        if tid in kept:
            assert isinstance(found[digest], bytes)  # read back and verified against its hash
        else:
            assert digest not in found
    again = collect(data)
    assert (again.spans_removed, again.blobs_released) == (0, 0)


def test_the_samplers_files_are_merged_as_passes_pile_up(tmp_path: Path) -> None:
    from airlock.store.embedded.sampling import decisions_dir

    data = DataDir.at(tmp_path)
    data.create()
    segments = ParquetSegments(data)
    write_traffic(data, segments, 1, seed=6)
    stage = SamplingPass(config(tmp_path), data)
    stage.run(T0 + 10**12)
    for seq in range(1, 40):  # a pass per new segment
        rows = trace_rows(random.Random(seq), T0 + seq * 10**9, "busy", error=False)
        segments.write("w1", seq, pa.Table.from_pylist(rows, schema=SPAN_SCHEMA), HOP_SCHEMA.empty_table())
        stage.run(T0 + 10**12)
    files = live_segments(decisions_dir(data))
    assert len(files) < 40 and files[0].first == 1 and files[-1].last == 40
    assert sampling_status(data).totals["traces"][0] == 100 + 39  # nothing lost or counted twice


@pytest.mark.parametrize("reserve", [0.0, 1.0])
def test_the_bill_and_queries_stay_unbiased_once_sampling_prunes_the_record(tmp_path: Path, reserve: float) -> None:
    """Regression: the cost report read the pruned record unweighted (the bill fell from $7.20 to $1.46).
    A kept trace now counts 1/p times, and a dropped trace kept only as replay reserve counts zero times."""
    from airlock.ledger.lines import build_bill

    data = DataDir.at(tmp_path)
    data.create()
    cfg = config(tmp_path, span_budget_per_hour=100_000, rate_window_s=60, replay_reserve=reserve)
    segments = ParquetSegments(data, SampledRetention(data))
    write_traffic(data, segments, 20)

    def inference() -> tuple[float, int]:
        bill = build_bill(cfg)
        try:
            lines = [line for line in bill.lines() if line["category"] == "inference"]
        finally:
            bill.close()
        return sum(line["usd"] * line["scale"] for line in lines), len({line["trace_id"] for line in lines})

    def query() -> dict[str, Any]:
        from airlock.query import QuerySpec, run_query

        return run_query(DuckDBSpanQuery(data), QuerySpec(by=("airlock.tenant",), limit=10), cfg).rows

    from airlock.config.schema import EnergySettings
    from airlock.energy.report import energy_report

    cfg = cfg.model_copy(
        update={"energy": EnergySettings.model_validate({"profiles": [{"model": "m", "preset": "llama-3.1-8b-h100"}]})}
    )

    def report() -> tuple[float, float, float, float, float]:
        from airlock.ledger import cost_report

        total = cost_report(cfg, []).total
        energy = energy_report(cfg, []).total
        return total.total_usd, total.tasks, energy["joules"], energy["tasks"], energy["calls"]

    # every task also posted a line item (exact: never sampled) for its trace
    from airlock.ledger import LedgerItems, LineItemIn

    items = LedgerItems(SQLiteLedgerItems(data.state_db))
    tenants = {r["trace_id"]: r["airlock.tenant"] for r in DuckDBSpanReader(data).sql("SELECT * FROM spans")}
    for n, (trace_id, tenant) in enumerate(sorted(tenants.items())):
        items.add(tenant, [LineItemIn(id=f"i{n}", category="tool", amount_usd=0.001, trace_id=trace_id)])
    items.close()

    exact, traces = inference()
    before = report()
    assert before[1] == before[3] == traces
    counted = {r["airlock.tenant"]: r for r in query()}  # builds the query copies of the unpruned segments
    SamplingPass(cfg, data).run(now_ns=T0 + 10**12)
    # decided but not yet compacted: the decisions weigh the spans already (no stamp is needed)
    assert inference()[0] == pytest.approx(exact, rel=0.05)
    assert report() == pytest.approx(before, rel=0.05)
    assert segments.compact("w1", 16) == 20
    estimated, present = inference()
    assert present == traces if reserve else present < traces / 2  # pruned, unless all are in the reserve
    assert estimated == pytest.approx(exact, rel=0.05)
    # tasks whose traces were dropped are not counted again through their posted items, and energy
    # (from profiles) is estimated like cost
    assert report() == pytest.approx(before, rel=0.05)
    # airlock query weights the same way; its copy of the merged segment is not joined from the unstamped ones
    for row in query():
        before = counted[row["airlock.tenant"]]
        assert row["spans"] == pytest.approx(before["spans"], rel=0.05)
        assert row["errors"] == pytest.approx(before["errors"], abs=1)  # every error trace is kept, at p = 1
        assert row["input_tokens"] == pytest.approx(before["input_tokens"], rel=0.05)


def test_a_failing_pass_does_not_end_the_sampler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: a "database is locked" (sqlite3.OperationalError, now the store's StoreUnavailable) escaped
    the gateway's sampler loop, which then stopped for good, and with it every compaction of the data directory."""
    import asyncio

    from airlock.errors import StoreUnavailable
    from airlock.sampling.service import run_sampler

    data = DataDir.at(tmp_path)
    data.create()
    cfg = config(tmp_path, interval_s=0.01)
    calls = {"n": 0}
    real_run = SamplingPass.run

    def flaky(self: SamplingPass, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise StoreUnavailable("database is locked") if calls["n"] == 1 else RuntimeError("a defect")
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(SamplingPass, "run", flaky)

    async def main() -> None:
        task = asyncio.ensure_future(run_sampler(cfg, data))
        for _ in range(500):
            await asyncio.sleep(0.01)
            if calls["n"] >= 4:
                break
        assert not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert calls["n"] >= 4
