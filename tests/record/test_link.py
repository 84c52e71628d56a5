"""The gateway's side of the recorder and its writer process, without HTTP: a real writer process,
real segments, real spill files; what happens when the backlog fills, when the writer dies, when it
cannot start."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from airlock.config.schema import Config
from airlock.record.link import RecorderLink, RecorderStartError
from airlock.record.losses import read_losses
from airlock.store.embedded import BlobReader, DataDir, DuckDBSpanReader

SECRET = b"Bearer sk-never-on-disk-4711"


def config(data_dir: Path, **recorder: Any) -> Config:
    return Config.model_validate(
        {
            "data_dir": str(data_dir),
            "upstreams": [
                {
                    "name": "u",
                    "base_url": "http://127.0.0.1:9/v1",
                    "region": "r",
                    "jurisdiction": "EU",
                    "models": [{"name": "m"}],
                }
            ],
            "api_keys": [{"tenant": "t", "key_sha256": "0" * 64}],
            "recorder": {"segment_max_age_s": 0.05, **recorder},
        }
    )


def record(i: int, **extra: Any) -> dict[str, Any]:
    request = b'{"model": "m", "messages": [{"role": "user", "content": "n%d"}]}' % i
    return {
        "trace_id": f"{i:032x}",
        "span_id": f"{i:016x}",
        "request_id": f"{i:016x}",
        "kind": "model.chat",
        "start_ns": 1_000 + i,
        "end_ns": 2_000 + i,
        "status": "ok",
        "_raw_headers": ((b"X-Airlock-Attr-Locale", b"ja-JP"), (b"Authorization", SECRET)),
        "_payloads": {
            "airlock.payload.request": request,
            "airlock.payload.upstream_request": request,  # sent unchanged: the very same object
            "airlock.payload.response": b'{"id": "r%d", "usage": {"prompt_tokens": 3}}' % i,
        },
        "_response_format": "json",
        "_hops": [{"trace_id": f"{i:032x}", "span_id": f"{i:016x}", "attempt": 1, "upstream": "u", "outcome": "ok"}],
        **extra,
    }


def rows(data_dir: Path) -> list[dict[str, Any]]:
    return DuckDBSpanReader(DataDir.at(data_dir)).sql("SELECT * FROM spans ORDER BY span_id")


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 60))


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def no_secret_on_disk(data_dir: Path) -> bool:
    return all(SECRET not in p.read_bytes() for p in data_dir.rglob("*") if p.is_file())


def test_records_go_through_the_writer_process_into_segments(tmp_path: Path) -> None:
    async def body() -> None:
        link = RecorderLink(config(tmp_path), DataDir.at(tmp_path), "w-link", {"airlock.node": "n1"})
        await link.start()
        assert link.writer_pid and link.writer_pid != os.getpid()
        for i in range(100):
            link.submit(record(i))
        await link.close()  # the writer writes out everything it holds before it exits
        stats = link.stats()
        assert (stats["accepted"], stats["written"], stats["spilled"], stats["dropped"]) == (100, 100, 0, 0)

    run(body)
    got = rows(tmp_path)
    assert len(got) == 100
    row = got[7]
    assert dict(row["attributes"]) == {"locale": "ja-JP"} and row["airlock.node"] == "n1"
    assert row["gen_ai.usage.input_tokens"] == 3 and row["gen_ai.response.id"] == "r7"
    # The request went upstream unchanged: one blob, both columns name it.
    assert row["airlock.payload.upstream_request"] == row["airlock.payload.request"]
    store = BlobReader(DataDir.at(tmp_path))
    assert store.get(row["airlock.payload.request"]).startswith(b'{"model": "m"')
    assert no_secret_on_disk(tmp_path)
    status = (tmp_path / "run" / "w-link.json").read_text()
    assert '"stopped":true' in status and f'"pid":{os.getpid()}' in status  # speaks for the gateway
    assert '"queue_depth":0' in status and '"accepted":100' in status


def test_a_backlog_over_the_queue_size_spills_and_the_writer_replays_it(tmp_path: Path) -> None:
    async def body() -> None:
        link = RecorderLink(config(tmp_path, queue_size=5), DataDir.at(tmp_path), "w-spill")
        await link.start()
        for i in range(50):  # no await between: the writer cannot confirm any, so 45 spill
            link.submit(record(i))
        assert (link.queue_depth, link.spilled, link.dropped) == (5, 45, 0)
        await until(lambda: link.stats()["written"] == 50 and not link.spill.pending())
        await link.close()

    run(body)
    assert len(rows(tmp_path)) == 50
    assert not list((tmp_path / "spill").iterdir()) and not list((tmp_path / "wal").iterdir())
    assert no_secret_on_disk(tmp_path)


def test_durable_mode_answers_once_the_record_is_in_the_synced_write_ahead_file(tmp_path: Path) -> None:
    async def body() -> None:
        link = RecorderLink(config(tmp_path, durable=True, segment_max_age_s=3600), DataDir.at(tmp_path), "w-dur")
        await link.start()
        fut = link.submit(record(1))
        assert fut is not None and not fut.done()
        await asyncio.wait_for(fut, 5)
        wal = list((tmp_path / "wal").glob("w-dur.*.wal"))
        assert wal and f"{1:016x}".encode() in wal[0].read_bytes()
        await link.close()

    run(body)
    assert len(rows(tmp_path)) == 1


def test_a_killed_writer_process_is_replaced_and_loses_nothing_it_confirmed(tmp_path: Path) -> None:
    async def body() -> None:
        link = RecorderLink(config(tmp_path, segment_max_age_s=3600), DataDir.at(tmp_path), "w-kill")
        await link.start()
        first = link.writer_pid
        assert first is not None
        for i in range(20):
            link.submit(record(i))
        await until(lambda: link.queue_depth == 0)  # all 20 confirmed: in the write-ahead file, no segment yet
        os.kill(first, signal.SIGKILL)
        await until(lambda: link.error is not None)
        assert "writer process exited" in (link.error or "") and link.accepting  # policy: keep serving
        for i in range(20, 30):  # while it is down: to the spill file
            link.submit(record(i))
        assert link.spilled == 10
        await until(lambda: link.error is None and link.writer_pid != first)
        assert link.writer_id == "w-kill-r1"  # a new id: its segments cannot collide with the dead one's
        await until(lambda: link.stats()["written"] >= 10 and not link.spill.pending())
        await link.close()
        assert link.dropped == 0

    run(body)
    assert [r["span_id"] for r in rows(tmp_path)] == [f"{i:016x}" for i in range(30)]
    assert no_secret_on_disk(tmp_path)
    dead = (tmp_path / "run" / "w-kill.json").read_text()
    assert '"stopped":true' in dead  # no longer counted as a live worker


def test_a_value_msgpack_cannot_carry_still_reaches_the_record(tmp_path: Path) -> None:
    async def body() -> None:
        link = RecorderLink(config(tmp_path), DataDir.at(tmp_path), "w-big")
        await link.start()
        link.submit(record(1, **{"gen_ai.request.seed": 2**70, "airlock.decisions": [{"kind": object()}]}))
        link.submit(record(2))
        await link.close()

    run(body)
    got = rows(tmp_path)
    assert [r["span_id"] for r in got] == [f"{1:016x}", f"{2:016x}"]
    assert "partial" in (got[0]["airlock.decisions"] or "") and got[0]["status"] == "ok"


def test_a_writer_that_cannot_start_stops_the_start(tmp_path: Path) -> None:
    blocked = tmp_path / "data"
    blocked.write_text("a file where the data directory should be")

    async def body() -> None:
        link = RecorderLink(config(blocked), DataDir.at(blocked), "w-bad")
        with pytest.raises(RecorderStartError, match=r"FileExistsError|NotADirectoryError|File exists|Not a directory"):
            await link.start()

    run(body)


def children_of_this_process() -> list[int]:
    """This process's writer processes (other tests' simulators may be running too)."""
    me = str(os.getpid())
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ours = (p / "stat").read_text().rsplit(")", 1)[1].split()[1] == me
                if ours and b"airlock.record.process" in (p / "cmdline").read_bytes():
                    out.append(int(p.name))
            except OSError:
                continue
    return out


def test_durable_acknowledgements_survive_a_stalled_gateway_loop(tmp_path: Path) -> None:
    # One record a batch: thousands of acknowledgements pile up unread while the loop is stalled. The
    # writer's sends used to share a non-blocking socket with its reads and gave up on the first full buffer.
    async def body() -> None:
        cfg = config(tmp_path, durable=True, batch_max_records=1, segment_max_age_s=3600, writer_nice=0)
        link = RecorderLink(cfg, DataDir.at(tmp_path), "w-stall")
        await link.start()
        futures = []
        for i in range(2000):
            futures.append(link.submit(record(i)))
            if i % 5 == 0:
                await asyncio.sleep(0)
        time.sleep(2.5)  # the loop stalls (a long GC, a huge parse) while the writer keeps confirming
        await asyncio.wait_for(asyncio.gather(*futures), 20)
        assert link.queue_depth == 0
        await link.close()
        assert link.stats()["written"] == 2000

    run(body)


def test_a_failing_store_at_shutdown_spills_what_the_writer_holds_without_credentials(tmp_path: Path) -> None:
    async def body() -> None:
        cfg = config(tmp_path, batch_max_records=2, segment_max_age_s=3600, writer_nice=0)
        link = RecorderLink(cfg, DataDir.at(tmp_path), "w-fail")
        await link.start()
        (tmp_path / "wal").rename(tmp_path / "wal-aside")
        (tmp_path / "wal").write_text("the disk refuses")
        for i in range(10):
            link.submit(record(i))
        await until(lambda: link.error is not None)
        started = time.monotonic()
        await link.close(timeout=30)  # the writer used to retry forever, never reading the end of its input
        assert time.monotonic() - started < 15
        stats = link.stats()
        assert (stats["accepted"], stats["spilled"], stats["dropped"], stats["written"]) == (10, 10, 0, 0)

    run(body)
    assert no_secret_on_disk(tmp_path)
    assert (tmp_path / "spill" / "w-fail.w.spill").stat().st_size > 0  # replayed by the next start


def test_a_restart_that_keeps_failing_runs_one_writer_at_a_time(tmp_path: Path) -> None:
    async def body() -> None:
        link = RecorderLink(config(tmp_path, writer_nice=0), DataDir.at(tmp_path), "w-retry")
        await link.start()
        os.kill(link.writer_pid or 0, signal.SIGKILL)
        await until(lambda: link.error is not None)
        (tmp_path / "run").rename(tmp_path / "run-aside")  # a new writer cannot take its lock
        (tmp_path / "run").write_text("not a directory")
        await asyncio.sleep(4)  # restarts at 1 s and 2 s fail
        assert link._generation <= 3 and len(children_of_this_process()) <= 1
        (tmp_path / "run").unlink()
        (tmp_path / "run-aside").rename(tmp_path / "run")
        await until(lambda: link.error is None, timeout=20)
        assert len(children_of_this_process()) == 1
        link.submit(record(1))
        started = time.monotonic()
        await link.close(timeout=30)
        assert time.monotonic() - started < 10 and not children_of_this_process()

    run(body)
    assert [r["span_id"] for r in rows(tmp_path)] == [f"{1:016x}"]


def test_records_submitted_while_closing_go_to_the_spill_file(tmp_path: Path) -> None:
    async def body() -> None:
        link = RecorderLink(config(tmp_path), DataDir.at(tmp_path), "w-late")
        await link.start()
        for i in range(5):
            link.submit(record(i))
        closing = asyncio.ensure_future(link.close())
        await asyncio.sleep(0)  # close has begun: the end of the input is on its way
        for i in range(5, 8):
            link.submit(record(i))
        await closing
        stats = link.stats()
        assert (stats["accepted"], stats["written"], stats["spilled"], stats["dropped"]) == (8, 5, 3, 0)

    run(body)
    assert no_secret_on_disk(tmp_path)


def test_a_writer_stopped_at_the_close_timeout_has_what_it_held_counted_as_lost(tmp_path: Path) -> None:
    """Regression: a writer that did not finish within the close timeout was killed with its records
    unconfirmed, and nothing counted them."""

    async def body() -> None:
        link = RecorderLink(config(tmp_path, writer_nice=0), DataDir.at(tmp_path), "w-hung")
        await link.start()
        os.kill(link.writer_pid or 0, signal.SIGSTOP)  # hung: it cannot confirm or finish
        for i in range(10):
            link.submit(record(i))
        await link.close(timeout=0.5)
        stats = link.stats()
        assert (stats["accepted"], stats["dropped"], stats["written"]) == (10, 10, 0)

    run(body)
    losses = read_losses(tmp_path / "run")
    assert losses.dropped == 10
    assert losses.reasons == {"the writer process was stopped at shutdown before confirming them": 10}
