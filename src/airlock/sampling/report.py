"""What the sampled record holds and why: kept traces by reason, rates per key, budget use, drop
summaries, and per key the totals estimated from kept traces (adjusted counts) beside the exact ones."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from airlock.store.embedded.layout import DataDir
from airlock.store.embedded.sampling import embedded_sampling_stores
from airlock.store.sampling import SamplingStores

_HOUR_NS = 3_600_000_000_000


@dataclass
class SamplingStatus:
    passes: int
    last_pass_ns: int | None
    pending: int
    unread_segments: int
    skipped_segments: int  # merged before the sampler read them (sampling was off): never decided
    early: dict[str, int]  # traces decided before complete: spans (a giant trace) | pending (too many waiting)
    by_reason: list[dict[str, Any]]
    keys: list[dict[str, Any]]
    drops: list[dict[str, Any]]
    budget_per_hour: int | None
    kept_spans_by_hour: list[dict[str, Any]]
    totals: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def sampling_status(
    data: DataDir, budget_per_hour: int | None = None, hours: int = 6, stores: SamplingStores | None = None
) -> SamplingStatus:
    """The sampled record of `data` (through `stores`, the embedded ones on it by default)."""
    stores = stores or embedded_sampling_stores(data)
    state = stores.open_state()
    try:
        summary = state.summary()
        cursors = state.cursors()
    finally:
        state.close()
    unread = len(stores.feed.segments_after(cursors))
    probabilities: dict[str, float] = {}
    if summary.model:
        probabilities = {k: v[3] for k, v in summary.model["rates"]["keys"].items()}
    report = stores.report
    by_reason = report.by_outcome_and_reason()
    keys = report.by_key()
    for k in keys:
        k["probability"] = probabilities.get(k["key"])
    drops = report.drops()
    newest = report.newest_start_ns() or time.time_ns()
    since = (newest // _HOUR_NS - hours + 1) * _HOUR_NS  # the record's last hours
    kept_by_hour = report.kept_by_hour(since)
    early = report.early_decisions()
    totals = {
        name: (sum((k[name] or 0) for k in keys), sum((k[name + "_est"] or 0) for k in keys))
        for name in ("traces", "spans", "errors", "tokens", "cost")
    }
    return SamplingStatus(
        passes=summary.passes,
        last_pass_ns=summary.last_pass_ns,
        pending=summary.pending,
        unread_segments=unread,
        skipped_segments=summary.skipped,
        early=early,
        by_reason=by_reason,
        keys=keys,
        drops=drops,
        budget_per_hour=budget_per_hour,
        kept_spans_by_hour=kept_by_hour,
        totals=totals,
    )
