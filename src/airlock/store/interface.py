"""The storage interface, grouped by concern. The gateway and recorder see only these protocols, so a
server-backed implementation (PostgreSQL for state, ClickHouse for spans and hops, S3 for blobs) can
stand beside the embedded one without either of them changing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa


class BlobStore(Protocol):
    """Payload bytes, content-addressed by sha256, stored once however often they recur."""

    def put(self, data: bytes) -> str: ...
    def get(self, digest: str) -> bytes: ...
    def has(self, digest: str) -> bool: ...


class SegmentSink(Protocol):
    """Where a writer's batches of spans and hops land. A writer owns the segments it writes."""

    def write(self, writer_id: str, seq: int, spans: pa.Table, hops: pa.Table) -> None: ...
    def covers(self, writer_id: str, seq: int) -> bool: ...
    def compact(self, writer_id: str, min_segments: int) -> int: ...


@dataclass(frozen=True)
class TraceFilter:
    since_ns: int | None = None
    until_ns: int | None = None
    tenant: str | None = None
    model: str | None = None
    status: str | None = None
    trace_id: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    limit: int = 50


class SpanReader(Protocol):
    """Read side of the record."""

    def traces(self, flt: TraceFilter) -> list[dict[str, Any]]: ...
    def spans_of_trace(self, trace_id: str) -> list[dict[str, Any]]: ...
    def hops_of_trace(self, trace_id: str) -> list[dict[str, Any]]: ...
    def sql(self, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...


class StateStore(Protocol):
    """Control-plane state (prompts, rollouts, outbox queue, approvals, idempotency keys)."""

    def schema_version(self) -> int: ...
    def close(self) -> None: ...
