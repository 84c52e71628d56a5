"""The storage interface, grouped by concern. The gateway and recorder are written against these
protocols, and `airlock.store.embedded` is one implementation of them (Parquet segments, pack files,
SQLite); a server-backed one (ClickHouse for spans, hops and the blob index, S3 for packs, PostgreSQL
for state) can stand beside it without either of them changing. What each analysis reads of the record has its
own protocol module beside this one (query, slices, drift, export, demo, ...)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa


class PayloadSink(Protocol):
    """Where a writer's payloads go: stored once per digest, located through index rows that travel
    with the writer's segments."""

    def put_many(self, items: Sequence[bytes], sync: bool = False) -> list[str]: ...
    def remember(self, digests: Iterable[str]) -> None: ...
    def take_unlogged(self) -> list[tuple[str, str, int, int, int, int]]: ...
    def unlog(self, rows: list[tuple[str, str, int, int, int, int]]) -> None: ...
    def restore(self, rows: Sequence[Sequence[Any]]) -> None: ...
    def index_table(self) -> pa.Table: ...
    def index_written(self, n: int) -> None: ...
    def close(self) -> None: ...


class PayloadReader(Protocol):
    """Payload bytes by sha256, verified against it."""

    def get(self, digest: str) -> bytes: ...
    def get_many(self, digests: list[str]) -> dict[str, Any]: ...
    def resolve(self, prefix: str) -> str: ...


class BlobLocator(Protocol):
    """Where payloads are, by digest: the blob index, whichever store keeps it. The embedded
    `BlobReader` (over the index segments) is one."""

    def locate(self, digests: list[str]) -> Mapping[str, Sequence[Any]]:
        """An index row (digest, pack, frame_offset, frame_length, inner_offset, length) for each
        digest the index holds (any one, where it holds several); digests it does not hold are absent."""
        ...

    def resolve(self, prefix: str) -> str:
        """The full digest for a unique prefix of at least 8 hex characters; KeyError when none or
        several match."""
        ...


class SegmentSink(Protocol):
    """Where a writer's batches of spans, hops and blob index rows land. A writer owns its segments."""

    def write(
        self, writer_id: str, seq: int, spans: pa.Table, hops: pa.Table, blob_index: pa.Table | None = None
    ) -> None: ...
    def covers(self, writer_id: str, seq: int) -> bool: ...
    def discard_partial(self, writer_id: str, seq: int) -> None: ...
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
    originals_only: bool = False  # leave out traces that are themselves replays


class SpanReader(Protocol):
    """Read side of the record. With a tenant, a trace is that tenant's spans only (another
    tenant's spans of the same trace id are not shown, and find_trace finds only its traces)."""

    def traces(self, flt: TraceFilter) -> list[dict[str, Any]]: ...
    def spans_of_trace(self, trace_id: str, tenant: str | None = None) -> list[dict[str, Any]]: ...
    def hops_of_trace(self, trace_id: str, tenant: str | None = None) -> list[dict[str, Any]]: ...
    def find_trace(self, id_or_prefix: str, tenant: str | None = None) -> str | None: ...


class StateStore(Protocol):
    """Control-plane state (prompts, rollouts, outbox queue, approvals, idempotency keys)."""

    def schema_version(self) -> int: ...
    def close(self) -> None: ...
