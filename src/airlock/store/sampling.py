"""What tail sampling asks of the store, in its own terms.

The sampler (airlock.sampling) owns the policies, rates, sketches and decisions; these protocols are
everything it reads and writes:

- `SamplerFeed`: the span segments each writer has written past the sampler's cursor, and their rows;
- `DecisionSink`: where a pass's decisions and drop summaries go;
- `SampleReport`: the aggregates `airlock sample status` and `sample show` print;
- `SamplerLock`: held by the one process that runs passes on a record;
- `SamplingStateRepository`: the cursor, the pass log, the model and the waiting traces, committed
  together per pass, with a compare-and-set on the pass;
- `RetentionReads` and `RecordCollector`: what compaction and `airlock sample gc` need to drop what
  sampling did not keep.

Every method raises only `airlock.errors.StoreError` subclasses for a storage failure (StoreConflict
when a compare-and-set loses). The embedded implementation is `airlock.store.embedded.sampling`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa


@dataclass(frozen=True, order=True)
class FeedSegment:
    """A finished span segment: writer `writer`'s batches `first` through `last` (inclusive)."""

    writer: str
    first: int
    last: int


class SamplerFeed(Protocol):
    """New spans for the sampler, a segment at a time."""

    def segments_after(self, cursors: Mapping[str, int]) -> list[FeedSegment]:
        """The live segments (not covered by a wider merged one) whose last batch is past their writer's
        cursor (-1 for a writer not in `cursors`), ordered by writer, then first batch. A segment whose
        first batch is at or before the cursor was merged after the cursor passed part of it."""
        ...

    def span_rows(self, segment: FeedSegment, columns: Sequence[str], batch_rows: int) -> Iterator[dict[str, Any]]:
        """The segment's spans as dicts, read `batch_rows` at a time (the segment bounds the memory used).
        Each dict holds those of `columns` the segment has; a column it lacks is absent, not None."""
        ...


class DecidedTrace(Protocol):
    """One decision of a pass, as the store keeps it (airlock.sampling.Decision is one)."""

    trace_id: str
    keep: bool
    reason: str
    probability: float
    key: str
    status: str
    traces: int
    spans: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    start_ns: int
    duration_ms: float
    reserve: bool
    early: str

    @property
    def adjusted_count(self) -> float: ...


@dataclass(frozen=True)
class DropSummary:
    """Dropped traces of one hour (by start), key and status, aggregated: what totals need once their
    spans are gone. `reserved` counts those whose spans stay in the replay reserve."""

    hour_ns: int
    key: str
    status: str
    traces: int
    spans: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    reserved: int


class DecisionSink(Protocol):
    """Where the sampler's output goes."""

    def write_pass(self, pass_no: int, decisions: Sequence[DecidedTrace], summaries: Sequence[DropSummary]) -> None:
        """Store a pass's decisions and drop summaries; writing the same pass again (a retry of a pass
        that never committed) replaces what it wrote before."""
        ...

    def merge_small_files(self) -> int:
        """Housekeeping after a pass: merge small pieces of output so their number grows slowly with the
        passes. Returns how many were merged (0 when none)."""
        ...


class SampleReport(Protocol):
    """The sampled record's aggregates. Each method returns one dict per row, with the keys named."""

    def by_outcome_and_reason(self) -> list[dict[str, Any]]:
        """outcome ('kept' | 'dropped (replay reserve)' | 'dropped'), reason, traces (decided traces, not
        late additions), spans, min_p, max_p: ordered by outcome descending, then traces descending."""
        ...

    def by_key(self) -> list[dict[str, Any]]:
        """key, then exact and estimated (weighted by adjusted count) totals: traces, traces_est, spans,
        spans_est, errors, errors_est, tokens, tokens_est, cost, cost_est; and kept (traces kept): ordered by
        traces descending."""
        ...

    def drops(self) -> list[dict[str, Any]]:
        """From the drop summaries: key, status, traces, spans, tokens, cost, reserved: ordered by traces
        descending."""
        ...

    def newest_start_ns(self) -> int | None:
        """The latest start of a decided trace; None before the first decision."""
        ...

    def kept_by_hour(self, since_ns: int) -> list[dict[str, Any]]:
        """Per hour (hour_ns, by start) from `since_ns` on: kept_spans and kept_traces, ordered by hour."""
        ...

    def early_decisions(self) -> dict[str, int]:
        """How many decisions were made before their trace was complete, by why ('spans' | 'pending')."""
        ...

    def decisions_of(self, trace_prefix: str) -> list[dict[str, Any]]:
        """Every decision row (a trace's decision and its late additions) of the traces whose id starts with
        `trace_prefix`, ordered by pass, then traces descending: trace_id, keep, reason, probability,
        adjusted_count, key, status, traces, spans, errors, input_tokens, output_tokens, cost_usd, start_ns,
        duration_ms, reserve, early, pass."""
        ...


@dataclass(frozen=True)
class PassCommit:
    """Everything one pass changed. `cursors`: per writer, the last batch read; `waiting`: per writer, the
    first batch a still-waiting trace began in; `changed`: waiting traces' state rows by trace id (added
    or updated); `removed`: traces no longer waiting; `model`: the sampler's model as JSON-able data;
    `stats`: spans_read, decided, kept, pending and skipped."""

    pass_no: int
    at_ns: int
    cursors: Mapping[str, int]
    waiting: Mapping[str, int]
    changed: Mapping[str, list[Any]]
    removed: Iterable[str]
    model: dict[str, Any]
    stats: Mapping[str, int]


@dataclass(frozen=True)
class StateSummary:
    """The sampler's state at a glance: passes run, when the last ran, segments skipped (merged before the
    sampler read them), traces waiting, and the model as of the last pass (None before the first)."""

    passes: int
    last_pass_ns: int | None
    skipped: int
    pending: int
    model: dict[str, Any] | None = None


class SamplerLock(Protocol):
    """The right to run sampler passes on a record, held by one process at a time until released (or
    until the process ends)."""

    def release(self) -> None: ...


class SamplingStateRepository(Protocol):
    """The sampler's control-plane state. One process runs passes at a time (it holds the sampler lock);
    `commit` also refuses a pass that another process committed first."""

    def cursors(self) -> dict[str, int]:
        """Per writer, the last batch the sampler has read."""
        ...

    def decided_through(self, writer_id: str) -> int:
        """The last batch of this writer read with every trace begun in it decided (-1: none, or no sampler
        has run): compaction may merge up to there."""
        ...

    def last_pass(self) -> int:
        """The number of the last committed pass (0 before the first)."""
        ...

    def model(self) -> dict[str, Any] | None:
        """The model committed with the last pass; None before the first."""
        ...

    def pending(self) -> list[list[Any]]:
        """The state row of every waiting trace, as committed."""
        ...

    def summary(self) -> StateSummary:
        """Passes run, the last one's time, segments skipped, traces waiting and the model, read together."""
        ...

    def commit(self, change: PassCommit) -> None:
        """Everything a pass changed, at once: a failure before it leaves the state as it was, so the pass
        is run again whole. Raises StoreConflict, changing nothing, unless `change.pass_no` is the pass
        after the last committed one (another process ran a pass since this one read the state)."""
        ...

    def close(self) -> None:
        """Let go of the repository's connection; it is not used again."""
        ...


class RetentionReads(Protocol):
    """What compaction reads to drop what sampling did not keep."""

    def decided_through(self, writer_id: str) -> int:
        """As SamplingStateRepository.decided_through."""
        ...

    def verdicts(self, trace_ids: pa.Array) -> pa.Table | None:
        """For each of `trace_ids` the sampler decided, one row: trace_id, keep, reserve, rate (how many
        traces it stands for: the adjusted count if kept, else 0) and reason ('replay reserve' or 'dropped'
        for a trace not kept). None before the sampler's first decision."""
        ...


Retain = Callable[[pa.Table, pa.Table], tuple[pa.Table, pa.Table]]


@dataclass
class PruneResult:
    segments_rewritten: int = 0
    spans_removed: int = 0


@dataclass
class ReleaseResult:
    packs_rewritten: int = 0
    bytes_before: int = 0
    bytes_after: int = 0


class RecordCollector(Protocol):
    """`airlock sample gc`'s operations on the whole record, with no writer running."""

    def writers_stopped(self) -> AbstractContextManager[None]:
        """Held while the collection runs: raises GatewayRunning (changing nothing) if any writer of the
        record is alive."""
        ...

    def prune_segments(self, retain: Retain) -> PruneResult:
        """Rewrite every segment whose (spans, hops) `retain` changes; returns how many and spans removed."""
        ...

    def referenced_payloads(self) -> set[str]:
        """Every payload digest a stored span names, or one written but not yet in a segment."""
        ...

    def indexed_payloads(self) -> set[str]:
        """Every payload digest the blob index holds."""
        ...

    def payload_bytes(self) -> int:
        """The payload store's size on disk."""
        ...

    def release_payloads(self, digests: set[str]) -> ReleaseResult:
        """Forget these payloads (no writer will deduplicate against them again) and free their bytes,
        leaving every other payload readable; returns the store's size before and after."""
        ...


@dataclass(frozen=True)
class SamplingStores:
    """The stores tail sampling runs on, built together for one record. `open_state` opens the state
    repository (the caller closes it); `take_lock` takes the sampler lock without waiting (None while
    another process holds it); the others hold no connection between calls."""

    feed: SamplerFeed
    sink: DecisionSink
    report: SampleReport
    retention: RetentionReads
    collector: RecordCollector
    open_state: Callable[[], SamplingStateRepository]
    take_lock: Callable[[], SamplerLock | None]
