"""OTLP out: the exporter tails the record's segments and sends new spans to a collector, here a
second real gateway's /v1/traces; a cursor in SQLite means a restart resends nothing, also across a
compaction of the segments being tailed."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from airlock.config.schema import OtlpExport
from airlock.errors import EgressRefused, StoreConflict
from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.store import embedded_stores
from airlock.store.embedded import DataDir, DuckDBSpanReader, ParquetSegments, SQLiteState
from airlock.store.export import Cursor
from airlock.telemetry.exporter import ExportTail, OtlpExporter, export_tail
from helpers import API_KEY, Gateway, Sim, wait_recorded, write_config

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _segment(first_id: int, n: int, source: str | None = None) -> pa.Table:
    rows = [
        {
            "trace_id": f"{first_id + i:032x}",
            "span_id": f"{first_id + i:016x}",
            "kind": "model.chat",
            "start_ns": 1_000 + first_id + i,
            "end_ns": 2_000 + first_id + i,
            "status": "ok",
            "airlock.source": source,
            "attributes": {"feature": "x"},
        }
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=SPAN_SCHEMA)


def _tail_all(tail: ExportTail, limit: int) -> list[str]:
    seen = []
    while not (batch := tail.next_batch(limit)).empty:
        seen += [r["span_id"] for r in batch.rows]
        tail.commit(batch)
    return seen


def test_tail_sends_each_row_once_and_resumes_inside_a_segment(tmp_path: Path) -> None:
    data = DataDir.at(tmp_path)
    data.create()
    SQLiteState(data.state_db).close()
    segments = ParquetSegments(data)
    for seq in range(3):
        segments.write("w1", seq, _segment(seq * 10, 5), HOP_SCHEMA.empty_table())
    segments.write("w2", 0, _segment(100, 4, source="otlp"), HOP_SCHEMA.empty_table())
    tail = export_tail(embedded_stores(str(data.root)), include_received=False)
    batch = tail.next_batch(7)  # stops inside w1's second segment
    tail.commit(batch)
    assert batch.advance == {"w1": Cursor(0, "w1.00000001-00000001.parquet", 2)}
    tail.close()
    tail = export_tail(embedded_stores(str(data.root)), include_received=False)  # a restart: the cursor is in SQLite
    seen = [r["span_id"] for r in batch.rows] + _tail_all(tail, 4)
    assert seen == [f"{i:016x}" for i in (*range(0, 5), *range(10, 15), *range(20, 25))]
    assert tail.cursor() == {"w1": Cursor(2), "w2": Cursor(0)}  # received spans are passed over, not sent
    segments.compact("w1", 3)  # merges the three sent segments: nothing to send again
    segments.write("w1", 3, _segment(30, 2), HOP_SCHEMA.empty_table())
    assert _tail_all(tail, 100) == [f"{i:016x}" for i in (30, 31)]
    tail.close()


def test_a_compaction_that_drops_rows_loses_nothing_unsent(tmp_path: Path) -> None:
    """Tail sampling drops the rows of dropped traces when it compacts: row positions shift, so a merged
    segment holding sent and unsent rows is sent whole again (duplicates of the sent part), never skipped."""
    data = DataDir.at(tmp_path)
    data.create()
    SQLiteState(data.state_db).close()
    segments = ParquetSegments(data)
    for seq in range(3):
        segments.write("w1", seq, _segment(seq * 10, 5), HOP_SCHEMA.empty_table())
    tail = export_tail(embedded_stores(str(data.root)), include_received=True)
    batch = tail.next_batch(5)
    tail.commit(batch)
    assert tail.cursor() == {"w1": Cursor(0)}
    merged = pa.concat_tables([_segment(0, 5), _segment(10, 5), _segment(20, 5)])
    kept = merged.filter(pa.array([i % 2 == 0 for i in range(15)]))  # what a sampler kept
    segments.write("w1.tmp", 0, kept, HOP_SCHEMA.empty_table())
    (data.spans / "w1.tmp.00000000-00000000.parquet").rename(data.spans / "w1.00000000-00000002.parquet")
    for seq in range(3):
        (data.spans / f"w1.{seq:08d}-{seq:08d}.parquet").unlink()
    batch = tail.next_batch(100)
    assert batch.resent == 8
    assert {r["span_id"] for r in batch.rows} == {r["span_id"] for r in kept.to_pylist()}
    tail.close()


def test_two_exporters_cannot_both_move_a_cursor_from_the_same_place(tmp_path: Path) -> None:
    """Two processes that read the same batch: the first to commit moves the cursor, the second is refused
    (StoreConflict) and changes nothing, so the cursor never goes back."""
    data = DataDir.at(tmp_path)
    data.create()
    SQLiteState(data.state_db).close()
    segments = ParquetSegments(data)
    for seq in range(2):
        segments.write("w1", seq, _segment(seq * 10, 3), HOP_SCHEMA.empty_table())
    first, second = (
        export_tail(embedded_stores(str(data.root)), include_received=True),
        export_tail(embedded_stores(str(data.root)), include_received=True),
    )
    ahead, behind = first.next_batch(6), second.next_batch(2)
    first.commit(ahead)
    with pytest.raises(StoreConflict):
        second.commit(behind)
    assert second.cursor() == first.cursor() == {"w1": Cursor(1)}
    assert first.start_at_end() == 0 and second.next_batch(10).empty
    first.close()
    second.close()


def test_first_start_without_backfill_skips_history(tmp_path: Path) -> None:
    data = DataDir.at(tmp_path)
    data.create()
    SQLiteState(data.state_db).close()
    segments = ParquetSegments(data)
    segments.write("w1", 0, _segment(0, 5), HOP_SCHEMA.empty_table())
    tail = export_tail(embedded_stores(str(data.root)), include_received=False)
    assert tail.start_at_end() == 1
    segments.write("w1", 1, _segment(10, 2), HOP_SCHEMA.empty_table())
    assert [r["span_id"] for r in tail.next_batch(10).rows] == [f"{i:016x}" for i in (10, 11)]
    assert tail.start_at_end() == 0  # only ever on the very first start
    tail.close()


def test_exporter_egress_admits_only_the_collector(tmp_path: Path) -> None:
    data = DataDir.at(tmp_path)
    data.create()
    exporter = OtlpExporter(OtlpExport(endpoint="http://127.0.0.1:4318/v1/traces"), embedded_stores(str(data.root)), {})
    exporter.egress.check("http://127.0.0.1:4318/v1/traces")
    for other in ("http://127.0.0.1:4319/v1/traces", "https://127.0.0.1:4318/v1/traces", "http://10.0.0.1:4318/"):
        with pytest.raises(EgressRefused):
            exporter.egress.check(other)
    exporter.tail.close()


def _chat(url: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        r = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "chat", "messages": [{"role": "user", "content": f"hello {i}"}]},
            headers={**AUTH, "x-airlock-attr-feature": "export-test"},
        )
        r.raise_for_status()
        ids.append(r.headers["traceparent"].split("-")[1])
    return ids


def _received(data_dir: Path) -> list[dict]:
    return DuckDBSpanReader(DataDir.at(data_dir)).sql(
        "SELECT * FROM spans WHERE \"airlock.source\" = 'otlp' AND kind <> 'gateway.reject' ORDER BY start_ns"
    )


def test_gateway_exports_to_a_collector_and_a_restart_resends_nothing(
    sims: dict[str, Sim], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "collector").mkdir()
    (tmp_path / "source").mkdir()
    collector = Gateway(write_config(tmp_path / "collector", sims))
    monkeypatch.setenv("TEST_OTLP_AUTH", f"Bearer {API_KEY}")
    export = {
        "otlp_export": {
            "endpoint": f"{collector.url}/v1/traces",
            "headers_env": {"Authorization": "TEST_OTLP_AUTH"},
            "interval_s": 0.2,
        }
    }
    config = write_config(tmp_path / "source", sims, telemetry=export)
    source = Gateway(config)
    try:
        traces = _chat(source.url, 3)
        rows = wait_recorded(collector.data_dir, 3, where="\"airlock.source\" = 'otlp'")
        assert sorted(r["trace_id"] for r in rows) == sorted(traces)
        row = rows[0]
        assert row["kind"] == "model.chat" and row["gen_ai.request.model"] == "chat"
        assert dict(row["attributes"])["feature"] == "export-test"
        assert dict(row["attributes"])["service.name"] == "airlock"
        assert row["gen_ai.usage.output_tokens"] > 0 and row["airlock.tenant"] == "acme"  # the collector's key
        source.stop()
        source = Gateway(config)  # same data directory, same state database
        time.sleep(1.0)  # several export intervals
        assert len(_received(collector.data_dir)) == 3
        traces += _chat(source.url, 1)
        wait_recorded(collector.data_dir, 4, where="\"airlock.source\" = 'otlp'")
        time.sleep(0.6)
        assert sorted(r["trace_id"] for r in _received(collector.data_dir)) == sorted(traces)
        metrics = httpx.get(f"{source.url}/metrics").text
        assert "airlock_otlp_exported_spans_total" in metrics
    finally:
        source.stop()
        collector.stop()


def test_a_failing_collector_loses_nothing(tmp_path: Path) -> None:
    """A collector that answers 503 gets the same spans again on the next round; nothing is marked sent
    before it accepts them."""
    import asyncio

    from aiohttp import web
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    data = DataDir.at(tmp_path)
    data.create()
    SQLiteState(data.state_db).close()
    ParquetSegments(data).write("w1", 0, _segment(0, 6), HOP_SCHEMA.empty_table())
    received: list[str] = []
    answers = [503, 200]

    async def collect(request: web.Request) -> web.Response:
        assert request.headers["Content-Encoding"] == "gzip"
        body = await request.read()  # aiohttp's server decompresses it
        status = answers.pop(0)
        if status == 200:
            req = ExportTraceServiceRequest.FromString(body)
            received.extend(s.span_id.hex() for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans)
        return web.Response(status=status)

    async def scenario() -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", collect)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        counters = {"exported": 0, "export_failures": 0}
        exporter = OtlpExporter(
            OtlpExport(endpoint=f"http://127.0.0.1:{port}/v1/traces"), embedded_stores(str(data.root)), counters
        )
        try:
            with pytest.raises(OSError):
                await exporter.export_once()
            assert exporter.tail.cursor() == {} and received == []  # nothing marked sent
            assert await exporter.export_once() == 6
            assert await exporter.export_once() == 0
        finally:
            await exporter.close()
            await runner.cleanup()

    asyncio.run(scenario())
    assert received == [f"{i:016x}" for i in range(6)]
