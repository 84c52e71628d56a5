"""ReplayRunRepository, on every backend: a run created once, its claim moved by compare-and-set (two
runners claiming at once: exactly one holds it), items saved only by the holder, counts and finishing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from contract_racing import race

from airlock.errors import StoreConflict
from airlock.store.replay import NewReplayRun, ReplayItem, RunCounts


def new_run(name: str = "r", traces: tuple[str, ...] = ("t2", "t1", "t3")) -> NewReplayRun:
    return NewReplayRun(name, "cand", {"since": "1h", "limit": 3}, {"on_divergence": "stop", "n": 1.5}, list(traces))


def test_a_new_run_is_stored_unclaimed_with_every_trace_pending(open_replay_runs: Callable[[], Any]) -> None:
    runs = open_replay_runs()
    before = datetime.now(UTC) - timedelta(seconds=2)
    runs.create(new_run())
    run = runs.load("r")
    assert run is not None
    assert (run.name, run.target, run.selection, run.options) == (
        "r",
        "cand",
        {"since": "1h", "limit": 3},
        {"on_divergence": "stop", "n": 1.5},
    )
    assert run.created_at.tzinfo is not None and before <= run.created_at <= datetime.now(UTC) + timedelta(seconds=2)
    assert (run.finished_at, run.claimed_by, run.claimed_at) == (None, None, None)
    assert runs.items("r") == [ReplayItem(t, "pending", {}) for t in ("t1", "t2", "t3")]
    assert runs.unfinished("r") == ["t1", "t2", "t3"]
    assert runs.counts("r") == RunCounts(pending=3)
    assert runs.load("other") is None and runs.items("other") == [] and runs.counts("other") == RunCounts()


def test_a_name_is_created_once(open_replay_runs: Callable[[], Any]) -> None:
    runs = open_replay_runs()
    runs.create(new_run())
    with pytest.raises(StoreConflict):
        runs.create(new_run(traces=("t9",)))
    assert [i.trace_id for i in runs.items("r")] == ["t1", "t2", "t3"]  # left as it was
    first, second = open_replay_runs(), open_replay_runs()
    outcome = race(lambda: first.create(new_run("s", ("a",))), lambda: second.create(new_run("s", ("b",))))
    assert sorted(type(o).__name__ for o in outcome) == ["NoneType", "StoreConflict"], outcome
    assert [i.trace_id for i in runs.items("s")] == (["a"] if outcome[0] is None else ["b"])


def test_the_claim_moves_only_from_the_holder_named(open_replay_runs: Callable[[], Any]) -> None:
    runs = open_replay_runs()
    runs.create(new_run())
    assert not runs.claim("r", "a", "nobody")  # it is unclaimed, not held by "nobody"
    assert runs.claim("r", "a", None)
    assert not runs.claim("r", "b", None)  # a holds it
    run = runs.load("r")
    assert run is not None and run.claimed_by == "a" and run.claimed_at is not None
    assert run.claimed_at.tzinfo is not None
    assert runs.claim("r", "b", "a")  # taken over from a, naming it
    assert not runs.claim("r", "a", "a")
    assert not runs.claim("missing", "a", None)
    runs.release("r", "a")  # a no longer holds it: nothing changes
    run = runs.load("r")
    assert run is not None and run.claimed_by == "b"
    runs.release("r", "b")
    run = runs.load("r")
    assert run is not None and (run.claimed_by, run.claimed_at, run.finished_at) == (None, None, None)


def test_two_runners_claiming_at_once_exactly_one_holds_the_run(open_replay_runs: Callable[[], Any]) -> None:
    first, second = open_replay_runs(), open_replay_runs()
    for n in range(10):
        first.create(new_run(f"r{n}", ("t1",)))
        outcome = race(lambda n=n: first.claim(f"r{n}", "a", None), lambda n=n: second.claim(f"r{n}", "b", None))
        assert sorted(outcome) == [False, True], outcome
        run = second.load(f"r{n}")
        assert run is not None and run.claimed_by == ("a" if outcome[0] else "b")


def test_only_the_holder_saves_items(open_replay_runs: Callable[[], Any]) -> None:
    runs = open_replay_runs()
    runs.create(new_run())
    with pytest.raises(StoreConflict):  # nobody holds it
        runs.save_item("r", "a", "t1", "done", {})
    assert runs.claim("r", "a", None)
    with pytest.raises(StoreConflict):
        runs.save_item("r", "b", "t1", "done", {})
    assert runs.items("r")[0] == ReplayItem("t1", "pending", {})  # the refused save changed nothing
    runs.save_item("r", "a", "t1", "done", {"diverged_at": 2, "turns": [{"ok": True}]})
    runs.save_item("r", "a", "t2", "done", {"diverged_at": None})  # did not diverge
    runs.save_item("r", "a", "t3", "failed", {"error": "timeout"})
    assert runs.counts("r") == RunCounts(done=2, diverged=1, failed=1)
    assert runs.unfinished("r") == ["t3"]  # failed: to retry
    assert runs.items("r")[0] == ReplayItem("t1", "done", {"diverged_at": 2, "turns": [{"ok": True}]})
    runs.save_item("r", "a", "t3", "skipped", {"reason": "no calls"})
    assert runs.counts("r") == RunCounts(done=2, diverged=1, skipped=1) and runs.unfinished("r") == []


def test_finishing_gives_up_the_claim(open_replay_runs: Callable[[], Any]) -> None:
    runs = open_replay_runs()
    runs.create(new_run())
    runs.claim("r", "a", None)
    runs.finish("r", "b")  # not the holder: nothing changes
    run = runs.load("r")
    assert run is not None and run.finished_at is None and run.claimed_by == "a"
    runs.finish("r", "a")
    run = runs.load("r")
    assert run is not None and run.finished_at is not None and (run.claimed_by, run.claimed_at) == (None, None)
    with pytest.raises(StoreConflict):
        runs.save_item("r", "a", "t1", "done", {})


def test_saves_from_many_threads_of_one_runner(open_replay_runs: Callable[[], Any]) -> None:
    runs = open_replay_runs()
    traces = tuple(f"t{n:02d}" for n in range(24))
    runs.create(new_run(traces=traces))
    runs.claim("r", "a", None)

    def save(chunk: tuple[str, ...]) -> None:
        for t in chunk:
            runs.save_item("r", "a", t, "done", {"trace": t})

    threads = [threading.Thread(target=save, args=(traces[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert runs.items("r") == [ReplayItem(t, "done", {"trace": t}) for t in traces]
