"""What the sampler needs to know about one finished span, and what it keeps about one trace."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class SpanFacts:
    """One finished span, reduced to the facts the sampling policies read."""

    trace_id: str
    is_root: bool  # no parent: when it has ended, the trace is complete
    start_ns: int
    end_ns: int
    status: str
    key: str  # the dynamic-rate key (e.g. tenant|model)
    signature: str  # the attribute signature the rare policy counts
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    denied: bool = False  # a policy decision with verdict deny
    eval_failed: bool = False
    pinned: str = ""  # a reason this span's trace is always kept (e.g. "replay": a replay run's own spans)


@dataclass(slots=True)
class TraceState:
    """A trace not yet decided: constant-size aggregates, never its spans, so a trace of 100,000 spans
    costs what a trace of one does."""

    trace_id: str
    key: str
    signature: str
    start_ns: int
    end_ns: int
    last_seen_ns: int  # the sampler's clock when its latest span arrived
    spans: int = 0
    errors: int = 0
    status: str = "ok"  # error beats cancelled beats ok
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    denied: bool = False
    eval_failed: bool = False
    root_ended: bool = False
    key_from_root: bool = False
    pinned: str = ""
    origin: str = ""  # the span segment its first span came from (writer:seq): compaction waits for it

    def add(self, span: SpanFacts, now_ns: int) -> None:
        self.spans += 1
        self.start_ns = min(self.start_ns, span.start_ns)
        self.end_ns = max(self.end_ns, span.end_ns)
        self.last_seen_ns = now_ns
        if span.status == "error":
            self.errors += 1
        self.status = worse_status(self.status, span.status)
        self.input_tokens += span.input_tokens
        self.output_tokens += span.output_tokens
        self.cost_usd += span.cost_usd
        self.denied = self.denied or span.denied
        self.eval_failed = self.eval_failed or span.eval_failed
        self.pinned = self.pinned or span.pinned
        if span.is_root:
            self.root_ended = True
            if not self.key_from_root:  # the root says best what the trace was
                self.key, self.signature, self.key_from_root = span.key, span.signature, True

    @property
    def duration_ms(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e6

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @classmethod
    def first(cls, span: SpanFacts, now_ns: int) -> TraceState:
        state = cls(span.trace_id, span.key, span.signature, span.start_ns, span.end_ns, now_ns)
        state.add(span, now_ns)
        return state

    def to_row(self) -> list[object]:
        return [getattr(self, f) for f in _FIELDS]

    @classmethod
    def from_row(cls, row: list[object]) -> TraceState:
        return cls(*row)  # type: ignore[arg-type]


_FIELDS = [f for f in TraceState.__dataclass_fields__]
_SEVERITY = {"ok": 0, "cancelled": 1, "error": 2}


def worse_status(a: str, b: str) -> str:
    return a if _SEVERITY.get(a, 1) >= _SEVERITY.get(b, 1) else b
