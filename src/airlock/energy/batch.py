"""Batch size from the record, when the server does not report it: the average number of requests in
flight on the same upstream over each request's lifetime (itself included). A sweep over start and end
events per upstream: O(n log n)."""

from __future__ import annotations

import numpy as np


def mean_concurrency(upstream: np.ndarray, start_ns: np.ndarray, end_ns: np.ndarray) -> np.ndarray:
    """For each span, the time-average count of spans of its upstream in flight while it ran (>= 1)."""
    out = np.ones(len(start_ns), dtype=np.float64)
    if len(start_ns) == 0:
        return out
    end_ns = np.maximum(end_ns, start_ns)
    for up in np.unique(upstream):
        idx = np.nonzero(upstream == up)[0]
        s, e = start_ns[idx].astype(np.int64), end_ns[idx].astype(np.int64)
        times = np.concatenate([s, e])
        deltas = np.concatenate([np.ones(len(s), np.int64), -np.ones(len(e), np.int64)])
        order = np.lexsort((-deltas, times))  # at equal times, starts before ends: touching spans overlap
        times, deltas = times[order], deltas[order]
        level = np.cumsum(deltas)  # spans in flight just after each event
        # area[i] = integral of the in-flight count from the first event up to times[i]
        area = np.concatenate([[0.0], np.cumsum(level[:-1] * np.diff(times).astype(np.float64))])
        lo = np.searchsorted(times, s, side="left")
        hi = np.searchsorted(times, e, side="right") - 1
        dur = (e - s).astype(np.float64)
        integral = area[hi] - area[lo]
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(dur > 0, integral / dur, 0.0)
        # A zero-length span: the count in flight at its instant, itself included: what was in flight just
        # before it, plus everything that starts at that instant (starts sort before ends at equal times).
        first = np.searchsorted(times, s, side="left")
        before = np.where(first > 0, level[np.maximum(first - 1, 0)], 0)
        starts = np.sort(s)
        instant = before + np.searchsorted(starts, s, side="right") - np.searchsorted(starts, s, side="left")
        out[idx] = np.maximum(np.where(dur > 0, mean, instant), 1.0)
    return out


BUCKETS = ((1, "1"), (4, "2-4"), (16, "5-16"), (64, "17-64"), (256, "65-256"))


def batch_bucket(batch: float) -> str:
    rounded = round(batch)
    for top, label in BUCKETS:
        if rounded <= top:
            return label
    return "257+"


def batch_buckets(batch: np.ndarray) -> np.ndarray:
    """batch_bucket() over an array."""
    labels = np.array([label for _, label in BUCKETS] + ["257+"], dtype=object)
    tops = np.array([top for top, _ in BUCKETS])
    return labels[np.searchsorted(tops, np.round(batch), side="left")]
