"""The recorder without HTTP: queue, spill, writer, and reading back."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa

from airlock.config.schema import Recorder as RecorderConfig
from airlock.record import BatchWriter, Recorder
from airlock.store.embedded import DataDir, DuckDBSpanReader, PackWriter, ParquetSegments


def record(i: int) -> dict:
    return {
        "trace_id": f"{i:032x}",
        "span_id": f"{i:016x}",
        "request_id": f"{i:016x}",
        "kind": "model.chat",
        "start_ns": 1_000 + i,
        "end_ns": 2_000 + i,
        "status": "ok",
        "_raw_headers": ((b"X-Airlock-Attr-Locale", b"ja-JP"), (b"Authorization", b"Bearer secret")),
        "_payloads": {"airlock.payload.request": b'{"n": %d}' % i, "airlock.payload.response": b'{"usage": {}}'},
        "_response_format": "json",
        "_hops": [{"trace_id": f"{i:032x}", "span_id": f"{i:016x}", "attempt": 1, "upstream": "u", "outcome": "ok"}],
    }


def start(tmp: Path, **cfg: object) -> tuple[Recorder, BatchWriter, DataDir]:
    data = DataDir.at(tmp)
    data.create()
    rec = Recorder(RecorderConfig(segment_max_age_s=0.05, **cfg), data, "w-test", {"airlock.node": "n1"})
    return rec, BatchWriter(rec, PackWriter(data.blobs, "w-test"), ParquetSegments(data)), data


def count(data: DataDir, timeout: float = 5.0, want: int = 0) -> int:
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        n = DuckDBSpanReader(data).sql("SELECT count(*) AS n FROM spans")[0]["n"]
        if n >= want:
            break
        time.sleep(0.02)
    return int(n)


def test_full_queue_spills_and_spill_is_drained(tmp_path: Path) -> None:
    rec, writer, data = start(tmp_path, queue_size=4)
    for i in range(50):  # the writer is not running yet: 4 queue, 46 spill
        rec.submit(record(i))
    assert (rec.queue.qsize(), rec.spilled, rec.dropped) == (4, 46, 0)
    writer.start()
    try:
        assert count(data, want=50) == 50
    finally:
        writer.stop()
    row = DuckDBSpanReader(data).sql("SELECT * FROM spans WHERE span_id = ?", [f"{7:016x}"])[0]
    assert dict(row["attributes"]) == {"locale": "ja-JP"} and row["airlock.node"] == "n1"
    assert "authorization" not in row["airlock.request.headers"]
    assert DuckDBSpanReader(data).sql("SELECT count(*) AS n FROM hops")[0]["n"] == 50
    assert not list(data.spill.iterdir()) and not list(data.wal.iterdir())
    assert rec.stats()["written"] == 50


def test_spill_file_of_a_dead_process_is_recovered(tmp_path: Path) -> None:
    rec, _, data = start(tmp_path, queue_size=1)
    for i in range(10):
        rec.submit(record(i))
    rec.spill.close()  # the process dies here: 1 record in memory is lost, 9 reached the spill file
    rec2, writer2, _ = start(tmp_path)
    writer2.rec.writer_id = writer2.writer_id = "w-next"
    writer2.start()
    try:
        assert count(data, want=9) == 9 and rec2.recovered == 9
    finally:
        writer2.stop()


def break_hops(data: DataDir, aside: Path) -> None:
    """Make the hop segment folder unwritable in a way root cannot bypass: a file where it was."""
    data.hops.rename(aside)
    data.hops.write_text("a file where a folder should be")


def mend_hops(data: DataDir, aside: Path) -> None:
    data.hops.unlink()
    aside.rename(data.hops)


def wait_for_error(rec: Recorder, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while rec.error is None and time.monotonic() < deadline:
        time.sleep(0.01)


def test_write_errors_are_reported_and_retried(tmp_path: Path) -> None:
    rec, writer, data = start(tmp_path)
    writer.start()
    try:
        break_hops(data, tmp_path / "aside")
        for i in range(5):
            rec.submit(record(i))
        wait_for_error(rec)
        assert rec.error and rec.accepting  # policy "serve" keeps accepting
        mend_hops(data, tmp_path / "aside")
        assert count(data, want=5) == 5
        deadline = time.monotonic() + 5
        while rec.error is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert rec.error is None and rec.dropped == 0
    finally:
        writer.stop()


def test_a_failing_store_stays_reported_while_compaction_has_nothing_to_do(tmp_path: Path) -> None:
    # A compaction that merged nothing used to count as a successful write and clear the error every
    # few seconds, so /healthz flipped between ok and degraded while nothing could be written.
    rec, writer, data = start(tmp_path, compact_interval_s=0.05)
    writer.start()
    try:
        break_hops(data, tmp_path / "aside")
        for i in range(3):
            rec.submit(record(i))
        wait_for_error(rec)
        seen = set()
        for _ in range(100):  # a second, about twenty compaction passes
            seen.add(rec.error is None)
            time.sleep(0.01)
        assert seen == {False}
    finally:
        mend_hops(data, tmp_path / "aside")
        writer.stop()
    assert count(data, want=3) == 3


def test_segments_of_stopped_writers_are_compacted(tmp_path: Path) -> None:
    from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
    from airlock.store.embedded.segments import live_segments

    data = DataDir.at(tmp_path)
    data.create()
    segments = ParquetSegments(data)
    for n in range(6):  # a writer that has stopped left six small segments
        segments.write(
            "w-old", n, pa.Table.from_pylist([{"span_id": f"old-{n}"}], schema=SPAN_SCHEMA), HOP_SCHEMA.empty_table()
        )
    rec, writer, _ = start(tmp_path, compact_min_segments=4, compact_interval_s=0.05)
    writer.start()
    try:
        deadline = time.monotonic() + 5
        # the merged segment is renamed into place before the compaction is counted: wait for both
        while (len(live_segments(data.spans)) > 1 or rec.compactions < 1) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [(s.writer, s.first, s.last) for s in live_segments(data.spans)] == [("w-old", 0, 5)]
        assert count(data) == 6 and rec.compactions == 1
    finally:
        writer.stop()


def test_malformed_exchanges_do_not_stop_the_recorder(tmp_path: Path) -> None:
    """Regression: a string where a count belongs, or a message the tokenizer cannot read, killed the
    writer thread (and then the next start, replaying the same row)."""
    rec, writer, data = start(tmp_path)
    odd_usage = record(1)
    odd_usage["_payloads"]["airlock.payload.response"] = b'{"usage": {"prompt_tokens": "12", "completion_tokens": [1]}}'
    odd_message = record(2)
    odd_message["_tokenizer"] = "cl100k_base"
    odd_message["_payloads"]["airlock.payload.request"] = (
        b'{"model": "m", "messages": [{"role": "user", "content": "hi", "tool_calls": 5}]}'
    )
    wrong_type = record(3)
    wrong_type["http_status"] = "two hundred"  # a value Arrow cannot take
    huge_seed = record(5)  # JSON parses 1e22 as a float: a seed no int64 column (or frame) can hold
    huge_seed["_payloads"]["airlock.payload.request"] = b'{"model": "m", "messages": [], "seed": 1e22}'
    unframeable = record(6)  # an integer over 64 bits fits neither a JSON nor a msgpack frame
    unframeable["airlock.attempts"] = 2**70
    writer.start()
    try:
        for r in (odd_usage, odd_message, wrong_type, record(4), huge_seed, unframeable):
            rec.submit(r)
        assert count(data, want=6) == 6
        rows = {r["span_id"]: r for r in DuckDBSpanReader(data).sql("SELECT * FROM spans")}
        assert rows[f"{1:016x}"]["gen_ai.usage.input_tokens"] == 12
        assert rows[f"{1:016x}"]["gen_ai.usage.output_tokens"] is None
        assert "partial" in (rows[f"{3:016x}"]["airlock.decisions"] or "")
        assert rows[f"{5:016x}"]["gen_ai.request.seed"] is None
        assert "partial" in (rows[f"{6:016x}"]["airlock.decisions"] or "")
        assert rec.error is None
    finally:
        writer.stop()


def test_a_spill_file_being_drained_is_not_replayed_by_another_writer(tmp_path: Path) -> None:
    """Regression: rotating a spill file for draining released its lock, so a sibling's recovery
    could replay the same records a second time."""
    rec, _, _ = start(tmp_path, queue_size=1)
    for i in range(5):
        rec.submit(record(i))
    draining = rec.spill.take()
    assert draining is not None and draining.endswith(".draining")
    other, other_writer, _ = start(tmp_path)
    other.writer_id = other_writer.writer_id = "w-sibling"
    try:
        assert other_writer.recover() == 0 and Path(draining).exists()
    finally:
        rec.spill.close()
    assert other_writer.recover() == 4  # once its owner is gone, it is recovered (4 spilled, 1 queued)


def test_a_spill_is_replayed_under_steady_traffic_not_only_in_a_quiet_moment(tmp_path: Path) -> None:
    # The writer used to replay spilled records only when it found its queue empty, which steady
    # traffic never allows: a burst's spill stayed unreadable until the traffic paused.
    data = DataDir.at(tmp_path)
    data.create()
    cfg = RecorderConfig(queue_size=4, segment_max_age_s=3600)  # the writer always waits for the next record
    rec = Recorder(cfg, data, "w-steady", {"airlock.node": "n1"})
    writer = BatchWriter(rec, PackWriter(data.blobs, "w-steady"), ParquetSegments(data))
    for i in range(50):
        rec.submit(record(i))
    assert rec.spilled == 46
    writer.start()
    i = 50
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and (rec.spill.pending() or writer._draining):
            rec.submit(record(i))  # a record every 2 ms: the queue is never found empty
            i += 1
            time.sleep(0.002)
        assert not rec.spill.pending() and not writer._draining  # replayed while the traffic went on
    finally:
        writer.stop()
    assert count(data, want=i) == i
