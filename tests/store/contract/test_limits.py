"""The contract of RateBuckets and BudgetCounters (airlock.store.limits), on every backend: the GCRA
arithmetic with an injected clock, costs above one, corrections after the fact, budgets by window,
races between threads, and two OS processes sharing one limit."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from limit_stores import BACKENDS, CHILD_OPEN, opener_spec, store_opener

import airlock

T0 = 1_764_000_000.0  # an injected "now": a moment in late 2025
DAY = 86400.0


@pytest.fixture(params=BACKENDS)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    yield from store_opener(request, tmp_path)


@pytest.fixture
def store(open_store: Callable[[], Any]) -> Any:
    return open_store()


# Rate buckets


def test_a_burst_is_admitted_at_once_then_the_steady_rate(store: Any) -> None:
    answers = [store.take("k", 10, 5, now=T0) for _ in range(5)]
    assert [a.allowed for a in answers] == [True] * 5
    assert [a.remaining for a in answers] == [4, 3, 2, 1, 0]
    assert answers[-1].reset_s == pytest.approx(0.5, abs=1e-6)  # five tokens at ten a second
    refused = store.take("k", 10, 5, now=T0)
    assert not refused.allowed and refused.remaining == 0
    assert refused.retry_after_s == pytest.approx(0.1, abs=1e-6)
    early = store.take("k", 10, 5, now=T0 + 0.06)
    assert not early.allowed and early.retry_after_s == pytest.approx(0.04, abs=1e-6)
    # Steady: one every 0.1 s is always admitted, and nothing more.
    for i in range(1, 21):
        assert store.take("k", 10, 5, now=T0 + i * 0.1).allowed, i
        assert not store.take("k", 10, 5, now=T0 + i * 0.1 + 0.05).allowed, i
    assert store.take("k", 10, 5, now=T0 + 2.0 + 0.5).remaining == 4  # idle refills it, up to the burst
    assert store.take("k", 10, 5, now=T0 + 100).remaining == 4  # never beyond


def test_a_refused_take_charges_nothing_and_a_bucket_is_per_key(store: Any) -> None:
    assert store.take("a", 1, 2, cost=2, now=T0).allowed
    for _ in range(3):
        assert not store.take("a", 1, 2, now=T0).allowed
    assert store.take("a", 1, 2, now=T0 + 1.0).allowed  # the refusals did not push it further back
    assert store.take("b", 1, 2, cost=2, now=T0).allowed  # another key: a bucket of its own


def test_a_take_may_cost_many_tokens(store: Any) -> None:
    first = store.take("tokens", 10, 100, cost=60, now=T0)
    assert first.allowed and first.remaining == 40 and first.reset_s == pytest.approx(6.0, abs=1e-6)
    refused = store.take("tokens", 10, 100, cost=50, now=T0)
    assert not refused.allowed and refused.remaining == 40
    assert refused.retry_after_s == pytest.approx(1.0, abs=1e-6)  # ten more tokens at ten a second
    assert store.take("tokens", 10, 100, cost=40, now=T0).allowed
    peek = store.take("tokens", 10, 100, cost=0, now=T0 + 2.0)  # cost 0 reads without taking
    assert peek.allowed and peek.remaining == 20
    assert store.take("tokens", 10, 100, cost=0, now=T0 + 2.0).remaining == 20


def test_an_odd_rate_is_exact_in_whole_microseconds(store: Any) -> None:
    assert all(store.take("odd", 3, 7, now=T0).allowed for _ in range(7))  # never six and a rounding error
    refused = store.take("odd", 3, 7, now=T0)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(1 / 3, abs=1e-5)


def test_a_bucket_that_could_never_admit_is_refused_as_a_defect(store: Any) -> None:
    with pytest.raises(ValueError, match="burst"):
        store.take("k", 10, 5, cost=6, now=T0)
    with pytest.raises(ValueError, match="rate"):
        store.take("k", 0, 5, now=T0)
    with pytest.raises(ValueError, match="burst"):
        store.take("k", 1, 0, now=T0)


def test_an_estimate_is_corrected_after_the_fact(store: Any) -> None:
    assert store.take("t", 10, 100, cost=50, now=T0).remaining == 50  # estimated 50 tokens
    refunded = store.correct("t", 10, 100, -30, now=T0)  # it used 20
    assert refunded.allowed and refunded.remaining == 80
    charged = store.correct("t", 10, 100, 100, now=T0)  # then 100 more than thought: into debt
    assert not charged.allowed and charged.remaining == 0
    assert charged.retry_after_s == pytest.approx(2.1, abs=1e-6)  # 120 held, 99 the most for a take of 1
    assert not store.take("t", 10, 100, now=T0 + 2.0).allowed
    assert store.take("t", 10, 100, now=T0 + 2.1).allowed
    full = store.correct("t", 10, 100, -1000, now=T0 + 2.1)  # a refund never fills beyond the burst
    assert full.remaining == 100 and full.reset_s == 0.0
    assert store.take("t", 10, 100, cost=100, now=T0 + 2.1).allowed
    assert not store.take("t", 10, 100, now=T0 + 2.1).allowed


def test_the_store_clock_is_used_when_no_time_is_given(store: Any) -> None:
    assert store.take("clock", 0.5, 1).allowed
    refused = store.take("clock", 0.5, 1)
    assert not refused.allowed and 1.0 < refused.retry_after_s <= 2.0


def test_racing_threads_take_exactly_the_burst(open_store: Callable[[], Any]) -> None:
    stores = [open_store() for _ in range(8)]  # each its own connection, as separate processes have
    allowed: list[bool] = []
    start = threading.Barrier(len(stores))

    def take_all(store: Any) -> None:
        start.wait()
        results = [store.take("race", 1e-6, 25, now=T0).allowed for _ in range(10)]
        allowed.extend(results)

    threads = [threading.Thread(target=take_all, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(allowed) == 80 and sum(allowed) == 25


# Budget counters


def test_a_budget_holds_exactly_at_its_limit_within_a_window(store: Any) -> None:
    now = T0 + 3600  # one hour into a UTC day (T0 is 08:00 UTC)
    first = store.add("acme:day", 600_000, 1_000_000, DAY, now=now)
    assert first.allowed and first.total == 600_000
    assert first.reset_s == pytest.approx(DAY - (now % DAY), abs=1e-3)
    over = store.add("acme:day", 400_001, 1_000_000, DAY, now=now)
    assert not over.allowed and over.total == 600_000  # refused: nothing added
    exact = store.add("acme:day", 400_000, 1_000_000, DAY, now=now)
    assert exact.allowed and exact.total == 1_000_000  # at the limit is within it
    assert not store.add("acme:day", 1, 1_000_000, DAY, now=now).allowed
    assert store.total("acme:day", DAY, now=now) == 1_000_000


def test_settlements_and_refunds_are_added_whatever_the_limit(store: Any) -> None:
    assert store.add("k", 90, 100, DAY, now=T0).allowed
    settled = store.add("k", 25, None, DAY, now=T0)  # the call cost more than its estimate
    assert settled.allowed and settled.total == 115
    refund = store.add("k", -40, 100, DAY, now=T0)
    assert refund.allowed and refund.total == 75


def test_each_window_counts_from_zero_and_windows_are_aligned_to_the_epoch(store: Any) -> None:
    day_start = T0 - (T0 % DAY)
    assert store.add("k", 7, 10, DAY, now=day_start + DAY - 0.001).allowed
    assert not store.add("k", 7, 10, DAY, now=day_start + DAY - 0.001).allowed
    assert store.total("k", DAY, now=day_start) == 7
    assert store.total("k", DAY, now=day_start + DAY) == 0.0  # the next day
    nxt = store.add("k", 7, 10, DAY, now=day_start + DAY)
    assert nxt.allowed and nxt.total == 7 and nxt.reset_s == pytest.approx(DAY, abs=1e-3)
    assert store.total("k", 3600.0, now=day_start + DAY) == 0.0  # another window length, another counter
    assert store.total("other", DAY, now=day_start + DAY) == 0.0


def test_a_budget_window_must_be_positive(store: Any) -> None:
    with pytest.raises(ValueError, match="window"):
        store.add("k", 1, 10, 0, now=T0)


def test_racing_threads_spend_a_budget_exactly_to_its_limit(open_store: Callable[[], Any]) -> None:
    stores = [open_store() for _ in range(8)]
    answers: list[Any] = []
    start = threading.Barrier(len(stores))

    def spend(store: Any) -> None:
        start.wait()
        answers.extend(store.add("acme", 3, 100, DAY, now=T0) for _ in range(8))

    threads = [threading.Thread(target=spend, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sum(a.allowed for a in answers) == 33  # 33 * 3 = 99; a 34th would be 102
    assert stores[0].total("acme", DAY, now=T0) == 99


# Two processes


_CHILD = (
    CHILD_OPEN
    + """
import json, sys, time
from pathlib import Path
spec = json.loads(sys.argv[1])
store = child_open(spec)
go = Path(sys.argv[2])
deadline = time.monotonic() + 30
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.002)
taken = sum(store.take("shared", 1e-6, 30, now=1764000000.0).allowed for _ in range(40))
spent = sum(store.add("shared", 1, 30, 86400.0, now=1764000000.0).allowed for _ in range(40))
print(json.dumps({"taken": taken, "spent": spent}))
"""
)


def test_two_processes_share_one_limit_not_one_each(
    request: pytest.FixtureRequest, open_store: Callable[[], Any], tmp_path: Path
) -> None:
    spec = opener_spec(request.node.callspec.params["open_store"], request, tmp_path)
    open_store().close()  # the state database is migrated once, before either process starts
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(Path(airlock.__file__).parents[1])}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps(spec), str(go)], stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    time.sleep(0.05)
    go.touch()
    results = []
    for child in children:
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0
        results.append(json.loads(out))
    assert sum(r["taken"] for r in results) == 30  # 30 in all, not 30 per process
    assert sum(r["spent"] for r in results) == 30
    assert all(r["taken"] < 40 for r in results)


def test_the_embedded_store_sweeps_rows_that_no_longer_say_anything(tmp_path: Path) -> None:
    from airlock.store.embedded.limits import SQLiteLimits

    store = SQLiteLimits(tmp_path / "state.sqlite3")
    try:
        for i in range(600):  # each bucket is full again (and each window over) before the next write
            store.take(f"once-{i}", 1000, 1, now=T0 + i)
            store.add(f"once-{i}", 1, 10, 0.5, now=T0 + i)
        conn = sqlite3.connect(tmp_path / "state.sqlite3")
        buckets = conn.execute("SELECT count(*) FROM rate_buckets").fetchone()[0]
        counters = conn.execute("SELECT count(*) FROM budget_counters").fetchone()[0]
        conn.close()
        assert buckets < 600 and counters < 600
        assert store.take("once-599", 1000, 1, now=T0 + 599).allowed is False  # the newest is kept
    finally:
        store.close()
