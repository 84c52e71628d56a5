"""What stays of dropped traces once their spans are gone: per hour (by start), key and status, their
count, spans, errors, tokens and cost, and how many of them the replay reserve holds."""

from __future__ import annotations

from collections.abc import Iterable

from airlock.sampling.sampler import Decision
from airlock.store.sampling import DropSummary

_HOUR_NS = 3600 * 10**9


def drop_summaries(decisions: Iterable[Decision]) -> list[DropSummary]:
    """The dropped decisions aggregated, ordered by hour, key and status."""
    groups: dict[tuple[int, str, str], list[int | float]] = {}
    for d in decisions:
        if d.keep:
            continue
        g = groups.setdefault((d.start_ns - d.start_ns % _HOUR_NS, d.key, d.status), [0, 0, 0, 0, 0, 0.0, 0])
        g[0] += d.traces
        g[1] += d.spans
        g[2] += d.errors
        g[3] += d.input_tokens
        g[4] += d.output_tokens
        g[5] += d.cost_usd
        g[6] += int(d.reserve and d.traces)
    return [
        DropSummary(
            hour_ns=hour,
            key=key,
            status=status,
            traces=int(g[0]),
            spans=int(g[1]),
            errors=int(g[2]),
            input_tokens=int(g[3]),
            output_tokens=int(g[4]),
            cost_usd=float(g[5]),
            reserved=int(g[6]),
        )
        for (hour, key, status), g in sorted(groups.items())
    ]
