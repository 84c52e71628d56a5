"""What `airlock demo`'s report reads from the record, beside traces (SpanReader) and token drift
(DriftReader): the calls by the region that answered, the hops' outcomes, and a span count."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from airlock.store.drift import DriftReader
from airlock.store.interface import SpanReader


@dataclass(frozen=True)
class RegionCalls:
    """The gateway's own spans (not those received over OTLP) answered from one upstream region."""

    region: str  # "(none: rejected or exhausted)" for calls no upstream answered
    calls: int
    ok: int
    errors: int
    cancelled: int
    failed_over: int  # calls that took more than one attempt
    tokens_in: int
    tokens_out: int
    cached: int  # input tokens read from the provider's prompt cache
    p50_ms: float | None
    p95_ms: float | None


@dataclass(frozen=True)
class HopOutcome:
    upstream: str
    outcome: str
    hops: int


class DemoRecord(SpanReader, DriftReader, Protocol):
    def spans_recorded(self) -> int:
        """How many spans the record holds."""
        ...

    def calls_by_region(self) -> list[RegionCalls]:
        """One entry per upstream region, most calls first."""
        ...

    def hop_outcomes(self) -> list[HopOutcome]:
        """Hops counted by (upstream, outcome), in that order."""
        ...

    def first_failed_received_trace(self) -> str | None:
        """The trace id of the earliest failed span received over OTLP, if any."""
        ...

    def upstream_request_digest(self, trace_id: str) -> str | None:
        """The payload digest of a request the trace sent upstream, if one was stored."""
        ...
