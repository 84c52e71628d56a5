"""Replay's selection on ClickHouse: traces newest first with the count a limit cut, the model calls of
traces as whole span rows, a run's calls beside their originals, and payloads through a real
PayloadReader (the embedded packs here)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from airlock.errors import BlobCorrupt
from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.store.clickhouse.replay import ClickHouseBlobLocator, ClickHouseReplaySelection
from airlock.store.clickhouse.sink import ClickHouseSegmentSink
from airlock.store.clickhouse.transport import ClickHouseTransport
from airlock.store.embedded import DataDir, ParquetSegments
from airlock.store.embedded.blobs import PackWriter
from airlock.store.embedded.query import BlobReader
from airlock.store.interface import TraceFilter
from airlock.store.replay import RecordedPair

T0 = 1_780_000_000 * 10**9


def _span(trace: int, n: int, **columns: object) -> dict[str, object]:
    row = {
        "trace_id": f"{trace:032x}",
        "span_id": f"{n:016x}",
        "kind": "model.chat",
        "start_ns": T0 + n * 10**9,
        "status": "ok",
        "duration_ms": 100.0 + n,
        "airlock.tenant": "acme",
        "attributes": {},
    }
    return row | columns


def _selection(tmp_path: Path, clickhouse: ClickHouseTransport) -> tuple[ClickHouseReplaySelection, list[str]]:
    data = DataDir.at(tmp_path / "data")
    data.create()
    packs = PackWriter(data.blobs, "w1")
    digests = packs.put_many([b'{"messages": []}', b'{"answer": 1}'])
    index = packs.index_table()
    ParquetSegments(data).write("w1", 0, SPAN_SCHEMA.empty_table(), HOP_SCHEMA.empty_table(), blob_index=index)
    packs.close()
    spans = [
        _span(1, 1, **{"airlock.payload.upstream_request": digests[0], "attributes": {"feature": "search"}}),
        _span(1, 2, kind="tool"),
        _span(2, 3, **{"airlock.tenant": "beta", "attributes": {"feature": ""}}),
        _span(3, 4, status="error", kind="model.embedding"),
        # replay r1 of span 1 (its judge's call is not a replayed call), kept out of the originals
        _span(9, 5, **{"airlock.replay.run": "r1", "airlock.replay.of": f"{1:016x}", "duration_ms": 80.0}),
        _span(
            9,
            6,
            **{"airlock.replay.run": "r1", "airlock.replay.of": f"{1:016x}", "attributes": {"replay_role": "judge"}},
        ),
    ]
    ClickHouseSegmentSink(clickhouse).write(
        "w1", 0, pa.Table.from_pylist(spans, schema=SPAN_SCHEMA), HOP_SCHEMA.empty_table(), blob_index=index
    )
    return ClickHouseReplaySelection(clickhouse, BlobReader(data)), digests


def test_traces_newest_first_with_what_a_limit_cut(tmp_path: Path, clickhouse: ClickHouseTransport) -> None:
    selection, _ = _selection(tmp_path, clickhouse)
    every = selection.traces(TraceFilter(), None)
    assert every.trace_ids == [f"{t:032x}" for t in (3, 2, 1)] and every.matched == 3  # never the replay's
    cut = selection.traces(TraceFilter(), 2)
    assert (cut.trace_ids, cut.matched, cut.cut) == ([f"{3:032x}", f"{2:032x}"], 3, True)
    assert selection.traces(TraceFilter(), 0).matched == 3
    assert selection.traces(TraceFilter(tenant="beta"), None).trace_ids == [f"{2:032x}"]
    assert selection.traces(TraceFilter(status="error"), None).trace_ids == [f"{3:032x}"]
    # a free attribute matches where the span has it, with that value: an empty value is a value
    assert selection.traces(TraceFilter(attributes={"feature": ""}), None).trace_ids == [f"{2:032x}"]
    assert selection.traces(TraceFilter(attributes={"feature": "search"}), None).trace_ids == [f"{1:032x}"]
    assert selection.traces(TraceFilter(attributes={"tenant": "acme"}), None).matched == 2  # an alias of a column
    window = TraceFilter(since_ns=T0 + 2 * 10**9, until_ns=T0 + 4 * 10**9)
    assert selection.traces(window, None).trace_ids == [f"{2:032x}", f"{1:032x}"]


def test_model_calls_pairs_and_payloads(tmp_path: Path, clickhouse: ClickHouseTransport) -> None:
    selection, digests = _selection(tmp_path, clickhouse)
    traces = [f"{1:032x}", f"{3:032x}", f"{7:032x}"]
    calls = selection.model_calls(traces, ["model.chat", "model.embedding"])
    assert list(calls) == traces and calls[traces[2]] == []
    (call,) = calls[traces[0]]  # the tool span is not a model call
    assert set(call) == set(SPAN_SCHEMA.names)
    assert (call["span_id"], call["attributes"], call["gen_ai.response.finish_reasons"]) == (
        f"{1:016x}",
        {"feature": "search"},
        None,
    )
    assert call["airlock.payload.upstream_request"] == digests[0]
    assert selection.model_calls([], ["model.chat"]) == {}
    assert selection.recorded_pairs("r1") == [RecordedPair(80.0, 101.0, None, digests[0])]
    assert selection.recorded_pairs("nope") == []
    payloads = selection.payloads([digests[0], "0" * 64])
    found = payloads.get_many([digests[0], digests[1], "0" * 64])
    assert found == {digests[0]: b'{"messages": []}'}  # only the set asked for, only what is stored
    assert not any(isinstance(v, BlobCorrupt) for v in found.values())


def test_the_blob_locator_finds_what_the_index_holds(tmp_path: Path, clickhouse: ClickHouseTransport) -> None:
    """ClickHouse's blob_index locates a payload as the embedded index segments do (S3's reader reads
    the frame it names)."""
    _, digests = _selection(tmp_path, clickhouse)
    locator = ClickHouseBlobLocator(clickhouse)
    embedded = BlobReader(DataDir.at(tmp_path / "data"))
    asked = [*digests, digests[0], "0" * 64]
    assert locator.locate(asked) == embedded.locate(asked) and set(locator.locate(asked)) == set(digests)
    assert locator.locate([]) == {}
    assert locator.resolve(digests[1][:10].upper()) == digests[1]
    with pytest.raises(KeyError):
        locator.resolve("0" * 12)  # none
    with pytest.raises(KeyError):
        locator.resolve("abc")  # too short to be a prefix
