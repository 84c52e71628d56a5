"""How a worker's writer process shares the CPU with serving.

Where the system allows it (Linux), the writer runs under SCHED_IDLE: it gets the CPU time nothing
else wants and is set aside the moment the gateway's loop, the upstream or the client has work. At
plain lower priority (nice) it still took the core from the loop for a scheduler slice whenever it
woke, which stalled every request in flight. Measured with 8 connections on two cores under SCHED_IDLE:
with gateway, upstream and load generator in one scheduling group, throughput +11 to +17% and p99
3.7 -> 2.1 ms; with each in an autogroup (session) of its own, as the benchmark runs them, throughput
+6% and p99 unchanged (an idle task only yields at once to tasks of its own group).

An idle writer must not fall behind for good on a host that is busy for long, so the gateway watches
its backlog: past a quarter of `recorder.queue_size` it switches the writer back to normal scheduling
(at `writer_nice`) until the backlog is under a twentieth again (`CATCH_UP_FROM`, `REST_BELOW`).

Leaving SCHED_IDLE needs CAP_SYS_NICE or an RLIMIT_NICE of at least 20 - writer_nice. The writer
process tries it on a throwaway thread at start; where it is refused, the writer keeps to nice alone
(an idle writer that could never be woken could fall behind without bound) and the status says why.
Durable mode never uses it: there every response waits on the writer."""

from __future__ import annotations

import os
import threading

CATCH_UP_FROM = 4  # a backlog over queue_size / 4 wakes an idle writer ...
REST_BELOW = 20  # ... until it is under queue_size / 20


def idle_refused() -> str | None:
    """None if this process's threads may enter SCHED_IDLE and leave it again; else why not. Tried
    on a throwaway thread, which has the process's nice value and limits."""
    if not hasattr(os, "SCHED_IDLE"):
        return "SCHED_IDLE is not available on this system"
    outcome: list[str | None] = []

    def attempt() -> None:
        tid = threading.get_native_id()
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except OSError as e:
            outcome.append(f"SCHED_IDLE refused: {e.strerror or e}")
            return
        try:
            os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
        except OSError as e:
            nice = os.getpriority(os.PRIO_PROCESS, 0)
            outcome.append(
                f"leaving SCHED_IDLE refused ({e.strerror or e}); it needs CAP_SYS_NICE or RLIMIT_NICE >= {20 - nice}"
            )
            return
        outcome.append(None)

    thread = threading.Thread(target=attempt, name="airlock-sched-probe")
    thread.start()
    thread.join()
    return outcome[0] if outcome else "the probe thread failed"


def set_nice(pid: int, nice: int) -> None:
    """Every thread of process `pid` to this nice value: on Linux a nice value is per thread, and a
    process already has threads (jemalloc's, pyarrow's) before it could lower its own."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:  # no /proc: where a nice value is per process
        os.setpriority(os.PRIO_PROCESS, pid, nice)
        return
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)
        except ProcessLookupError:
            continue


def set_idle(pid: int, idle: bool) -> None:
    """Every thread of process `pid` to SCHED_IDLE, or back to SCHED_OTHER (its nice value is kept).
    Raises OSError (ProcessLookupError once the process is gone)."""
    policy = os.SCHED_IDLE if idle else os.SCHED_OTHER
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setscheduler(int(tid), policy, os.sched_param(0))
        except ProcessLookupError:
            continue  # a thread that ended meanwhile


def policy_of(tid: int) -> str:
    """'idle' or 'normal' (any other policy), for status and tests."""
    return "idle" if os.sched_getscheduler(tid) == getattr(os, "SCHED_IDLE", -1) else "normal"
