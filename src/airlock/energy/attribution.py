"""Measured energy: a GPU's energy counter read at intervals, each interval's joules split among the
requests in flight on that GPU in proportion to the tokens each processed in it. Prefill tokens are
spread over a request's time to first token, decode tokens over the rest. An interval in which no
request processed a token is idle. A counter that went backwards (driver reload, wrap) leaves that
interval unmeasured. Windows shorter than the counter's update period are approximate, and so is
every request that drew energy from one, or that was itself shorter than the period.

Conservation holds by construction and is tested: attributed + idle == joules read."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from airlock.energy.readings import Reading


@dataclass(frozen=True, slots=True)
class Work:
    span_id: str
    start_ns: int
    end_ns: int
    first_token_ns: int  # start of decode; == start_ns when unknown
    prefill_tokens: int
    decode_tokens: int

    def tokens_in(self, a: int, b: int) -> float:
        """Tokens this request processed within [a, b)."""
        return _spread(self.prefill_tokens, self.start_ns, self.first_token_ns, a, b) + _spread(
            self.decode_tokens, self.first_token_ns, self.end_ns, a, b
        )


def _spread(tokens: int, lo: int, hi: int, a: int, b: int) -> float:
    if tokens <= 0:
        return 0.0
    if hi <= lo:  # all at one instant
        return float(tokens) if a <= lo < b else 0.0
    overlap = min(hi, b) - max(lo, a)
    return tokens * overlap / (hi - lo) if overlap > 0 else 0.0


@dataclass
class Attribution:
    joules: dict[str, float] = field(default_factory=dict)  # span id -> GPU joules
    idle_j: float = 0.0
    read_j: float = 0.0  # what the counter says was used, over the intervals it measured
    unmeasured_intervals: int = 0  # counter went backwards
    approximate: set[str] = field(default_factory=set)
    intervals: int = 0
    short_intervals: int = 0

    @property
    def attributed_j(self) -> float:
        return sum(self.joules.values())


def attribute(readings: list[Reading], work: list[Work], counter_update_ns: int) -> Attribution:
    """Split one device's energy among the work it did. `readings` are that device's, in time order."""
    out = Attribution()
    ordered = sorted(work, key=lambda w: w.start_ns)
    for w in ordered:
        if w.end_ns - w.start_ns < counter_update_ns:
            out.approximate.add(w.span_id)
    active: list[Work] = []  # calls begun before the interval's end and not ended before its start
    nxt = 0  # ordered[nxt:] have not begun yet
    for a, b in itertools.pairwise(readings):
        if b.t_ns <= a.t_ns:
            continue
        delta_mj = b.energy_mj - a.energy_mj
        if delta_mj < 0:
            out.unmeasured_intervals += 1
            continue
        joules = delta_mj / 1000.0
        out.intervals += 1
        out.read_j += joules
        short = b.t_ns - a.t_ns < counter_update_ns
        out.short_intervals += short
        # Only the calls in flight are looked at: one long call must not make every interval rescan the
        # calls that began after it (that was quadratic: 39 s instead of 0.5 s for 30,000 calls).
        while nxt < len(ordered) and ordered[nxt].start_ns < b.t_ns:
            active.append(ordered[nxt])
            nxt += 1
        active = [w for w in active if w.end_ns >= a.t_ns]
        shares: list[tuple[str, float]] = []
        for w in active:
            tokens = w.tokens_in(a.t_ns, b.t_ns)
            if tokens > 0:
                shares.append((w.span_id, tokens))
        total = sum(t for _, t in shares)
        if total <= 0:
            out.idle_j += joules
            continue
        for span_id, tokens in shares:
            out.joules[span_id] = out.joules.get(span_id, 0.0) + joules * tokens / total
            if short:
                out.approximate.add(span_id)
    return out
