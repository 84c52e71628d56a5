"""How the writer process is scheduled: under SCHED_IDLE where it may also be switched back, woken to
normal scheduling while its backlog is long, and at plain nice where the system refuses (as inside
`unshare -r`, where `make test` runs: a user namespace has no CAP_SYS_NICE)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from test_link import config, record, run, until

from airlock.cli.records import _writer_scheduling
from airlock.gateway.metrics import render
from airlock.record import scheduling
from airlock.record.link import RecorderLink
from airlock.store.embedded import DataDir

REFUSED = scheduling.idle_refused()  # the test process has the writer's rights and limits
needs_idle = pytest.mark.skipif(REFUSED is not None, reason=f"SCHED_IDLE cannot be left here: {REFUSED}")


def policies(pid: int) -> set[str]:
    return {scheduling.policy_of(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


def nices(pid: int) -> set[int]:
    return {os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


def test_the_probe_leaves_the_calling_thread_as_it_was() -> None:
    before = scheduling.policy_of(threading.get_native_id())
    scheduling.idle_refused()
    assert scheduling.policy_of(threading.get_native_id()) == before == "normal"


def test_the_writer_is_idle_where_allowed_and_says_why_not_elsewhere(tmp_path: Path) -> None:
    async def body() -> None:
        link = RecorderLink(config(tmp_path), DataDir.at(tmp_path), "w")
        await link.start()
        try:
            assert link.writer_pid is not None
            stats = link.stats()
            assert nices(link.writer_pid) == {10}  # writer_nice, on every thread
            if REFUSED is None:
                assert policies(link.writer_pid) == {"idle"}
                assert stats["writer_scheduling"] == "idle" and stats["writer_idle_refused"] is None
            else:
                assert policies(link.writer_pid) == {"normal"}
                assert stats["writer_scheduling"] == "nice 10"
                assert "SCHED_IDLE" in stats["writer_idle_refused"]
                assert _writer_scheduling(stats).startswith("nice 10 (not idle: ")
        finally:
            await link.close()

    run(body)


@pytest.mark.parametrize("recorder", [{"durable": True}, {"writer_idle": False}])
def test_durable_mode_and_writer_idle_off_keep_to_nice(tmp_path: Path, recorder: dict[str, bool]) -> None:
    async def body() -> None:
        link = RecorderLink(config(tmp_path, **recorder), DataDir.at(tmp_path), "w")
        await link.start()
        try:
            assert link.writer_pid is not None
            assert policies(link.writer_pid) == {"normal"}
            assert link.stats()["writer_scheduling"] == "nice 10"
            assert link.stats()["writer_idle_refused"] is None  # not tried: nothing to explain
        finally:
            await link.close()

    run(body)


@needs_idle
def test_a_long_backlog_wakes_the_idle_writer_until_it_has_caught_up(tmp_path: Path) -> None:
    """queue_size 200: a backlog over 50 switches the writer to normal scheduling (nice kept), and
    under 10 back to idle; every record is written."""

    async def body() -> None:
        link = RecorderLink(config(tmp_path, queue_size=200), DataDir.at(tmp_path), "w")
        await link.start()
        try:
            assert link.writer_pid is not None
            pid = link.writer_pid
            for i in range(50):
                link.submit(record(i))
            assert link.stats()["writer_scheduling"] == "idle" and link.catch_ups == 0
            link.submit(record(50))  # no await in between: nothing is confirmed yet, the backlog is 51
            assert link.stats()["writer_scheduling"] == "catching up" and link.catch_ups == 1
            assert policies(pid) == {"normal"} and nices(pid) == {10}
            await until(lambda: link.stats()["written"] == 51)
            await until(lambda: link.stats()["writer_scheduling"] == "idle")
            assert policies(pid) == {"idle"} and link.catch_ups == 1 and link.stats()["spilled"] == 0
            # what /metrics and `airlock status` make of it
            assert "airlock_recorder_writer_catch_ups_total 1\n" in render([link.stats()])
            assert _writer_scheduling(link.stats()) == "idle, caught up 1x"
        finally:
            await link.close()

    run(body)
