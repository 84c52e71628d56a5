"""What the sampled record holds and why: kept traces by reason, rates per key, budget use, drop
summaries, and per key the totals estimated from kept traces (adjusted counts) beside the exact ones."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from airlock.store.embedded import DataDir
from airlock.store.embedded.sampling import SampledReader, SamplingState


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


def sampling_status(data: DataDir, budget_per_hour: int | None = None, hours: int = 6) -> SamplingStatus:
    reader = SampledReader(data)
    state = SamplingState(data)
    try:
        passes, last, skipped = state.conn.execute(
            "SELECT count(*), max(at_ns), coalesce(sum(skipped), 0) FROM sampling_passes"
        ).fetchone()
        pending = state.conn.execute("SELECT count(*) FROM sampling_pending").fetchone()[0]
        model_row = state.conn.execute("SELECT model FROM sampling_model WHERE id = 1").fetchone()
        cursors = state.cursors()
    finally:
        state.close()
    from airlock.store.embedded.segments import live_segments

    unread = sum(1 for s in live_segments(data.spans) if s.last > cursors.get(s.writer, -1))
    probabilities: dict[str, float] = {}
    if model_row:
        probabilities = {k: v[3] for k, v in orjson.loads(model_row[0])["rates"]["keys"].items()}
    by_reason = reader.sql(
        """SELECT CASE WHEN keep THEN 'kept' WHEN reserve THEN 'dropped (replay reserve)' ELSE 'dropped' END AS outcome,
                  reason, count(*) FILTER (WHERE traces = 1) AS traces, sum(spans) AS spans,
                  min(probability) AS min_p, max(probability) AS max_p
           FROM sample_decisions GROUP BY 1, 2 ORDER BY 1 DESC, 3 DESC"""
    )
    keys = reader.sql(
        """SELECT key,
                  sum(traces) AS traces, sum(adjusted_count * traces) AS traces_est,
                  sum(spans) AS spans, sum(adjusted_count * spans) AS spans_est,
                  sum(errors) AS errors, sum(adjusted_count * errors) AS errors_est,
                  sum(input_tokens + output_tokens) AS tokens,
                  sum(adjusted_count * (input_tokens + output_tokens)) AS tokens_est,
                  sum(cost_usd) AS cost, sum(adjusted_count * cost_usd) AS cost_est,
                  count(*) FILTER (WHERE keep AND traces = 1) AS kept
           FROM sample_decisions GROUP BY key ORDER BY traces DESC"""
    )
    for k in keys:
        k["probability"] = probabilities.get(k["key"])
    drops = reader.sql(
        """SELECT key, status, sum(traces) AS traces, sum(spans) AS spans,
                  sum(input_tokens + output_tokens) AS tokens, sum(cost_usd) AS cost, sum(reserved) AS reserved
           FROM sample_summaries GROUP BY 1, 2 ORDER BY traces DESC"""
    )
    newest = reader.sql("SELECT max(start_ns) AS t FROM sample_decisions")[0]["t"] or time.time_ns()
    since = (newest // 3_600_000_000_000 - hours + 1) * 3_600_000_000_000  # the record's last hours
    kept_by_hour = reader.sql(
        """SELECT start_ns - start_ns % 3600000000000 AS hour_ns, sum(spans) AS kept_spans,
                  count(*) FILTER (WHERE traces = 1) AS kept_traces
           FROM sample_decisions WHERE keep AND start_ns >= ? GROUP BY 1 ORDER BY 1""",
        [since],
    )
    early = {
        r["early"]: int(r["n"])
        for r in reader.sql("SELECT early, count(*) AS n FROM sample_decisions WHERE early != '' GROUP BY 1")
    }
    totals = {
        name: (sum((k[name] or 0) for k in keys), sum((k[name + "_est"] or 0) for k in keys))
        for name in ("traces", "spans", "errors", "tokens", "cost")
    }
    return SamplingStatus(
        passes=int(passes),
        last_pass_ns=last,
        pending=int(pending),
        unread_segments=unread,
        skipped_segments=int(skipped),
        early=early,
        by_reason=by_reason,
        keys=keys,
        drops=drops,
        budget_per_hour=budget_per_hour,
        kept_spans_by_hour=kept_by_hour,
        totals=totals,
    )
