"""The tail sampler: fed finished spans, it decides whole traces once they are complete.

A trace is complete when its root span has ended, when `decision_wait_s` has passed since its newest
span ended, or early: when it reaches `max_spans_per_trace` spans or the number of traces waiting
exceeds `max_pending_traces`. What a waiting trace costs is a constant-size aggregate (TraceState), and
every structure here has a fixed bound, so memory stays bounded whatever arrives.

Policies keep (with adjusted count 1): a replay run's own traces (its report reads them), errors,
policy denials, failed evaluations, slow traces (over a fixed bound or the rolling quantile of
durations), costly ones (USD or tokens, the same way), and rare ones (an attribute signature the
frequent-items sketch has seen below a share of traffic). The rest are kept at their key's dynamic
rate p (adjusted count 1/p; see rates.py). Spans that arrive for a trace already decided follow its
decision as a late addition. Every decision, kept or dropped, is returned
with the trace's totals, so a dropped trace still counts in exact totals."""

from __future__ import annotations

import hashlib
import itertools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from airlock.config.schema import Sampling
from airlock.sampling.facts import SpanFacts, TraceState, worse_status
from airlock.sampling.rates import KeyRates
from airlock.sampling.sketches import RareSignatures, RollingQuantile

_HOUR_NS = 3600 * 10**9
_DECIDED_MEMORY = 50_000  # recently decided traces remembered, for their late spans
_DECIDED_PERSISTED = 5_000


@dataclass(slots=True)
class Decision:
    trace_id: str
    keep: bool
    reason: str  # replay | error | denied | failed_eval | slow | costly | rare | rate (kept or dropped by rate)
    probability: float  # the chance it had of being kept
    key: str
    status: str
    traces: int  # 1, or 0 for a late addition to a trace decided before
    spans: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    start_ns: int
    duration_ms: float
    reserve: bool = False  # dropped, but its spans and payloads stay (the replay reserve)
    early: str = ""  # why it was decided before it was complete: spans | pending
    # kept for a late error after the trace was dropped: kept to be seen, but it stands for no traffic
    # (the adjusted counts of the traces that were kept already stand for it)
    for_error_only: bool = False

    @property
    def adjusted_count(self) -> float:
        """How many traces this kept one stands for (0 when dropped, or kept only for a late error)."""
        return 1.0 / self.probability if self.keep and not self.for_error_only else 0.0


@dataclass(slots=True)
class _Remembered:
    keep: bool
    reason: str
    probability: float
    key: str
    reserve: bool
    for_error_only: bool = False


class Sampler:
    def __init__(self, cfg: Sampling) -> None:
        self.cfg = cfg
        window_ns = int(cfg.rate_window_s * 1e9)
        self.rates = KeyRates(cfg.span_budget_per_hour, window_ns, cfg.max_keys, cfg.seed)
        self.durations = RollingQuantile(_HOUR_NS)
        self.costs = RollingQuantile(_HOUR_NS)
        self.tokens = RollingQuantile(_HOUR_NS)
        self.rare = RareSignatures()
        self.pending: dict[str, TraceState] = {}
        self.changed: set[str] = set()  # pending traces touched since take_changes()
        self.removed: set[str] = set()  # pending traces decided since take_changes()
        self._backlog: list[Decision] = []  # decided early (between passes), returned by the next decide()
        self._decided: OrderedDict[str, _Remembered] = OrderedDict()
        self._late: dict[str, Decision] = {}  # late spans, one running addition per trace until decide()
        self.rare_hour = -1
        self.rare_spans = 0  # spans kept by the rare policy in the current hour

    # -- input -----------------------------------------------------------------------------------

    def add(self, span: SpanFacts, now_ns: int, origin: str = "") -> None:
        tid = span.trace_id
        state = self.pending.get(tid)
        if state is None:
            known = self._decided.get(tid)
            if known is not None:
                self._add_late(span, known)
                return
            state = self.pending[tid] = TraceState.first(span, now_ns)
            state.origin = origin
            if len(self.pending) > self.cfg.max_pending_traces:
                # Too many waiting: the oldest tenth is decided now, with what is known of them.
                oldest = list(itertools.islice(self.pending.values(), max(1, self.cfg.max_pending_traces // 10)))
                self._backlog += self._decide_batch(oldest, "pending")
        else:
            state.add(span, now_ns)
        self.changed.add(tid)
        if state.spans >= self.cfg.max_spans_per_trace:  # a giant trace: decided now, the rest come late
            self._backlog += self._decide_batch([state], "spans")

    def _add_late(self, span: SpanFacts, known: _Remembered) -> None:
        if span.status == "error" and not known.keep:
            # Every error trace is kept, also one whose error came after it was dropped (an agent that
            # paused past the decision wait, a worker that flushed late): what is left of it is kept now.
            known.keep, known.reason, known.probability, known.for_error_only = True, "error", 1.0, True
            if (pending := self._late.get(span.trace_id)) is not None:
                pending.keep, pending.reason, pending.probability, pending.for_error_only = True, "error", 1.0, True
        late = self._late.get(span.trace_id)
        if late is None:
            self._late[span.trace_id] = self._late_decision(span, known)
            return
        late.spans += 1
        late.errors += int(span.status == "error")
        late.status = worse_status(late.status, span.status)
        late.input_tokens += span.input_tokens
        late.output_tokens += span.output_tokens
        late.cost_usd += span.cost_usd
        late.start_ns = min(late.start_ns, span.start_ns)

    @staticmethod
    def _late_decision(span: SpanFacts, known: _Remembered) -> Decision:
        return Decision(
            span.trace_id,
            known.keep,
            known.reason,
            known.probability,
            known.key,
            span.status,
            0,
            1,
            int(span.status == "error"),
            span.input_tokens,
            span.output_tokens,
            span.cost_usd,
            span.start_ns,
            (span.end_ns - span.start_ns) / 1e6,
            known.reserve,
            for_error_only=known.for_error_only,
        )

    # -- deciding --------------------------------------------------------------------------------

    def ready(self, now_ns: int, flush: bool = False) -> list[TraceState]:
        wait_ns = int(self.cfg.decision_wait_s * 1e9)
        return [t for t in self.pending.values() if flush or t.root_ended or now_ns - t.end_ns >= wait_ns]

    def decide(self, now_ns: int, flush: bool = False) -> list[Decision]:
        """Decide every complete trace (every waiting one when `flush`); returns their decisions, those
        made early since the last call, and the late additions gathered since then."""
        out = self._backlog + self._decide_batch(self.ready(now_ns, flush), "")
        out += self._late.values()
        self._backlog, self._late = [], {}
        return out

    def _decide_batch(self, traces: list[TraceState], early: str) -> list[Decision]:
        done = sorted(traces, key=lambda t: t.trace_id)  # ids are random: a fair order
        if not done:
            return []
        thresholds = self._thresholds()
        reasons: list[str | None] = []
        for t in done:
            reason = self._policy(t, *thresholds)
            reasons.append(reason)
            self.rates.observe(t.key, t.spans, reason is not None, t.start_ns, t.end_ns)
            self.durations.update(t.duration_ms, t.end_ns)
            if t.cost_usd:
                self.costs.update(t.cost_usd, t.end_ns)
            self.tokens.update(float(t.tokens), t.end_ns)
            self.rare.update(t.signature)
        self.rates.refresh()
        out = []
        for t, reason in zip(done, reasons, strict=True):
            if reason is not None:
                keep, p = True, 1.0
            else:
                keep, p = self.rates.take(t.key)
                reason = "rate"
            reserve = not keep and self._reserved(t.trace_id)
            out.append(
                Decision(
                    t.trace_id,
                    keep,
                    reason,
                    p,
                    t.key,
                    t.status,
                    1,
                    t.spans,
                    t.errors,
                    t.input_tokens,
                    t.output_tokens,
                    t.cost_usd,
                    t.start_ns,
                    t.duration_ms,
                    reserve,
                    early,
                )
            )
            self._remember(t.trace_id, _Remembered(keep, reason, p, t.key, reserve))
            del self.pending[t.trace_id]
            self.changed.discard(t.trace_id)
            self.removed.add(t.trace_id)
        return out

    def _thresholds(self) -> tuple[float | None, float | None, float | None]:
        slow, costly = self.cfg.slow, self.cfg.costly
        dur = _lowest(slow.over_ms, self.durations.quantile(slow.quantile) if slow.quantile else None)
        usd = _lowest(costly.over_usd, self.costs.quantile(costly.quantile) if costly.quantile else None)
        tok = _lowest(
            float(costly.over_tokens) if costly.over_tokens else None,
            self.tokens.quantile(costly.quantile) if costly.quantile else None,
        )
        return dur, usd, tok

    def _policy(self, t: TraceState, slow_ms: float | None, usd: float | None, tokens: float | None) -> str | None:
        """The first policy that keeps this trace, or None."""
        cfg = self.cfg
        if t.pinned:
            return t.pinned
        if t.status in cfg.keep_statuses:
            return t.status
        if cfg.keep_denied and t.denied:
            return "denied"
        if t.eval_failed:
            return "failed_eval"
        if slow_ms is not None and t.duration_ms > slow_ms:
            return "slow"
        if (usd is not None and t.cost_usd > usd) or (tokens is not None and t.tokens > tokens):
            return "costly"
        if cfg.rare.enabled and self._rare(t):
            return "rare"
        return None

    def _rare(self, t: TraceState) -> bool:
        hour = t.end_ns // _HOUR_NS
        if hour != self.rare_hour:
            if self.rare_hour >= 0:
                self.rare.decay()
            self.rare_hour, self.rare_spans = hour, 0
        rare = self.cfg.rare
        if not self.rare.is_rare(t.signature, rare.below, rare.warmup_traces):
            return False
        if self.rare_spans + t.spans > rare.max_budget_share * self.cfg.span_budget_per_hour:
            return False  # a high-cardinality attribute must not make everything "rare"
        self.rare_spans += t.spans
        return True

    def _reserved(self, trace_id: str) -> bool:
        share = self.cfg.replay_reserve
        if share <= 0:
            return False
        digest = hashlib.blake2b(f"reserve\x00{self.cfg.seed}\x00{trace_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 < share

    def _remember(self, trace_id: str, what: _Remembered) -> None:
        self._decided[trace_id] = what
        if len(self._decided) > _DECIDED_MEMORY:
            self._decided.popitem(last=False)

    def oldest_waiting(self) -> dict[str, int]:
        """Per writer, the first segment a waiting trace began in: compaction must not merge it yet."""
        out: dict[str, int] = {}
        for t in self.pending.values():
            writer, _, seq = t.origin.rpartition(":")
            if writer:
                out[writer] = min(out.get(writer, int(seq)), int(seq))
        return out

    # -- persistence (the pass keeps waiting traces and the model in SQLite) ----------------------

    def take_changes(self) -> tuple[list[TraceState], set[str]]:
        """Waiting traces added or updated, and those decided, since the last call."""
        changed = [self.pending[t] for t in self.changed if t in self.pending]
        removed = self.removed
        self.changed, self.removed = set(), set()
        return changed, removed

    def dump_model(self) -> dict[str, Any]:
        return {
            "rates": self.rates.dump(),
            "durations": self.durations.dump(),
            "costs": self.costs.dump(),
            "tokens": self.tokens.dump(),
            "rare": self.rare.dump(),
            "rare_hour": self.rare_hour,
            "rare_spans": self.rare_spans,
            "decided": [  # the newest few, for spans that arrive late after a restart
                [k, v.keep, v.reason, v.probability, v.key, v.reserve, v.for_error_only]
                for k, v in list(self._decided.items())[-_DECIDED_PERSISTED:]
            ],
        }

    def load(self, model: dict[str, Any] | None, pending: list[TraceState]) -> None:
        if model:
            self.rates.load(model["rates"])
            self.durations.load(model["durations"])
            self.costs.load(model["costs"])
            self.tokens.load(model["tokens"])
            self.rare.load(model["rare"])
            self.rare_hour, self.rare_spans = model["rare_hour"], model["rare_spans"]
            self._decided = OrderedDict((r[0], _Remembered(*r[1:])) for r in model["decided"])
        self.pending = {t.trace_id: t for t in sorted(pending, key=lambda t: t.last_seen_ns)}


def _lowest(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None
