"""SamplingStateRepository and the sampler lock, on every backend: a pass is committed whole and only
after the last one (two samplers committing one pass at once: exactly one is kept), and the lock is held
by one taker at a time until released."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from contract_racing import race

from airlock.errors import StoreConflict
from airlock.store.sampling import PassCommit

T0 = 1_700_000_000_000_000_000


def commit(pass_no: int, through: int, **change: Any) -> PassCommit:
    fields: dict[str, Any] = {
        "pass_no": pass_no,
        "at_ns": T0 + pass_no,
        "cursors": {"w1": through},
        "waiting": {"w1": through},
        "changed": {"t1": ["t1", pass_no, 0.5, None]},
        "removed": (),
        "model": {"pass": pass_no, "rates": {"k": 0.25}},
        "stats": {"spans_read": 3, "decided": 1, "kept": 1, "pending": 1, "skipped": pass_no},
    }
    fields.update(change)
    return PassCommit(**fields)


def test_a_new_state_is_empty(open_sampling_state: Callable[[], Any]) -> None:
    state = open_sampling_state()
    assert (state.last_pass(), state.cursors(), state.model(), state.pending()) == (0, {}, None, [])
    assert state.decided_through("w1") == -1
    summary = state.summary()
    assert (summary.passes, summary.last_pass_ns, summary.skipped, summary.pending, summary.model) == (
        0,
        None,
        0,
        0,
        None,
    )


def test_passes_are_committed_in_order_and_whole(open_sampling_state: Callable[[], Any]) -> None:
    state = open_sampling_state()
    state.commit(commit(1, through=4))
    with pytest.raises(StoreConflict):  # another process committed pass 1 as well
        state.commit(commit(1, through=9, cursors={"w1": 9, "w2": 1}))
    with pytest.raises(StoreConflict):  # a pass that skips one
        state.commit(commit(3, through=9))
    assert (state.last_pass(), state.cursors(), state.model(), state.pending()) == (
        1,
        {"w1": 4},
        {"pass": 1, "rates": {"k": 0.25}},
        [["t1", 1, 0.5, None]],
    )
    assert state.decided_through("w1") == 3  # a trace still waits on batch 4
    state.commit(
        commit(
            2,
            through=9,
            cursors={"w1": 9, "w2": 5},
            waiting={},
            changed={"t2": ["t2", 2], "t3": ["t3", 2]},
            removed=iter(["t1"]),  # any iterable
        )
    )
    assert state.cursors() == {"w1": 9, "w2": 5}
    assert (state.decided_through("w1"), state.decided_through("w2")) == (9, 5)  # nothing waits
    assert sorted(state.pending()) == [["t2", 2], ["t3", 2]]
    state.commit(commit(3, through=10, changed={"t2": ["t2", 3]}, removed=["t3"], waiting={"w1": 7}))
    assert state.pending() == [["t2", 3]] and state.decided_through("w1") == 6
    summary = state.summary()
    assert (summary.passes, summary.last_pass_ns, summary.skipped, summary.pending) == (3, T0 + 3, 6, 1)
    assert summary.model == {"pass": 3, "rates": {"k": 0.25}}
    reopened = open_sampling_state()  # another process reads what was committed
    assert (reopened.last_pass(), reopened.cursors()) == (3, {"w1": 10, "w2": 5})


def test_two_samplers_committing_one_pass_at_once_exactly_one_is_kept(
    open_sampling_state: Callable[[], Any],
) -> None:
    first, second = open_sampling_state(), open_sampling_state()
    for pass_no in range(1, 9):
        outcome = race(
            lambda p=pass_no: first.commit(commit(p, through=p, model={"by": "first"})),
            lambda p=pass_no: second.commit(commit(p, through=100 + p, model={"by": "second"})),
        )
        assert sorted(type(o).__name__ for o in outcome) == ["NoneType", "StoreConflict"], outcome
        won_first = outcome[0] is None
        assert first.last_pass() == pass_no
        assert second.model() == {"by": "first" if won_first else "second"}
        assert second.cursors() == {"w1": pass_no if won_first else 100 + pass_no}


def test_the_sampler_lock_is_held_by_one_taker_until_released(take_sampler_lock: Callable[[], Any]) -> None:
    lock = take_sampler_lock()
    assert lock is not None
    assert take_sampler_lock() is None  # held
    assert take_sampler_lock() is None
    lock.release()
    lock.release()  # releasing twice is harmless
    again = take_sampler_lock()
    assert again is not None
    assert take_sampler_lock() is None
    again.release()
