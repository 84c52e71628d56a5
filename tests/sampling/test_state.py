"""The sampler's state through its repository and its stores: passes committed in order, a pass that lost
a race refused, a sampler that another process overtook brought up to date, and storage failures raised
as StoreError."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_stage import T0, config, write_traffic

from airlock.errors import StoreConflict, StoreUnavailable
from airlock.sampling.report import sampling_status
from airlock.sampling.stage import SamplingPass
from airlock.store.embedded import DataDir, ParquetSegments
from airlock.store.embedded.sampling import SQLiteSamplingState, embedded_sampling_stores
from airlock.store.sampling import PassCommit


def commit(pass_no: int, through: int) -> PassCommit:
    stats = {"spans_read": 3, "decided": 1, "kept": 1, "pending": 1, "skipped": 0}
    return PassCommit(
        pass_no=pass_no,
        at_ns=T0 + pass_no,
        cursors={"w1": through},
        waiting={"w1": through},
        changed={"t1": ["t1", pass_no]},
        removed=(),
        model={"pass": pass_no},
        stats=stats,
    )


def test_a_pass_is_committed_only_after_the_last_one(tmp_path: Path) -> None:
    data = DataDir.at(tmp_path)
    data.create()
    state = SQLiteSamplingState(data)
    try:
        assert (state.last_pass(), state.cursors(), state.model(), state.pending()) == (0, {}, None, [])
        assert state.decided_through("w1") == -1
        state.commit(commit(1, through=4))
        with pytest.raises(StoreConflict):  # another process committed pass 1 as well
            state.commit(commit(1, through=9))
        with pytest.raises(StoreConflict):  # a pass that skips one
            state.commit(commit(3, through=9))
        # what the refused commits carried changed nothing
        assert (state.last_pass(), state.cursors(), state.model(), state.pending()) == (
            1,
            {"w1": 4},
            {"pass": 1},
            [["t1", 1]],
        )
        assert state.decided_through("w1") == 3  # a trace still waits on segment 4: merge up to 3
        state.commit(commit(2, through=9))
        summary = state.summary()
        assert (summary.passes, summary.last_pass_ns, summary.pending, summary.model) == (2, T0 + 2, 1, {"pass": 2})
    finally:
        state.close()
    assert embedded_sampling_stores(data).retention.decided_through("w1") == 8


def test_a_sampler_overtaken_by_another_process_starts_again_from_the_committed_state(tmp_path: Path) -> None:
    """Regression: a SamplingPass kept its waiting traces in memory across passes without looking whether
    another process (`airlock sample run` beside a gateway's sampler) had committed one since, and decided
    those traces a second time: the status then counted them twice."""
    data = DataDir.at(tmp_path)
    data.create()
    traces = write_traffic(data, ParquetSegments(data), 3)  # each segment is 1 s of traffic
    cfg = config(tmp_path, span_budget_per_hour=100_000, rate_window_s=60)
    gateway = SamplingPass(cfg, data)
    assert gateway.run(now_ns=T0 + 11_500_000_000).pending > 0  # the newest traces wait (decision_wait_s 10)
    other = SamplingPass(cfg, data).run(now_ns=T0 + 10**12)  # another process decides them
    assert other.pending == 0 and other.decided > 0
    again = gateway.run(now_ns=T0 + 10**12)
    assert again.decided == 0
    assert sampling_status(data).totals["traces"][0] == len(traces)


def test_storage_failures_reach_the_sampler_as_store_errors(tmp_path: Path) -> None:
    data = DataDir.at(tmp_path)
    data.create()
    write_traffic(data, ParquetSegments(data), 2)
    (data.spans / "w1.00000002-00000002.parquet").write_bytes(b"not parquet")  # a segment gone bad
    stage = SamplingPass(config(tmp_path), data)
    with pytest.raises(StoreUnavailable, match=r"w1\.00000002-00000002\.parquet"):
        stage.run(now_ns=T0 + 10**12)
    state = SQLiteSamplingState(data)
    assert (state.last_pass(), state.cursors()) == (0, {})  # nothing committed: the pass is run again whole
    state.close()
    with pytest.raises(StoreUnavailable):  # the report reads the same record
        sampling_status(data)
