"""What replay asks of storage: which recorded traces and calls to replay (`ReplaySelection`), and the
state of a replay run, so that a killed run resumes and two runners never both run one name
(`ReplayRunRepository`). The embedded implementation is `airlock.store.embedded.replay`; another
backend implements these two protocols and nothing in `airlock.replay` changes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from airlock.errors import BlobCorrupt
from airlock.store.interface import TraceFilter

ITEM_STATUSES = ("pending", "done", "failed", "skipped")


@dataclass(frozen=True)
class TraceSelection:
    """The traces a selection took, newest first, and how many it matched before it was cut."""

    trace_ids: list[str]
    matched: int
    limit: int | None

    @property
    def cut(self) -> bool:
        """Whether the limit left out traces the filter matched."""
        return len(self.trace_ids) < self.matched

    def describe(self) -> str:
        """One line for a person: what was taken and, when cut, how to take more."""
        if self.cut:
            return f"newest {len(self.trace_ids)} of {self.matched} traces; --limit N or --all for more"
        return f"all {self.matched} matching traces"


@dataclass(frozen=True)
class RecordedPair:
    """One replayed call beside its original, as the record has them: both durations as the gateway
    measured them and the digests of the bytes each sent upstream."""

    replay_ms: float | None
    original_ms: float | None
    replay_request: str | None
    original_request: str | None


class Payloads(Protocol):
    """Payloads of a set of digests located in advance, so that reading one costs no lookup."""

    def get_many(self, digests: Sequence[str]) -> dict[str, bytes | BlobCorrupt]:
        """Each digest of the set that is stored, with its verified bytes or the corruption found;
        digests not stored (or not in the set) are absent."""
        ...


class ReplaySelection(Protocol):
    """The read side of the record as replay needs it."""

    def traces(self, flt: TraceFilter, limit: int | None) -> TraceSelection:
        """Original traces (never replays) with at least one span matching the filter's conditions,
        newest first by their first span, at most `limit` of them (None: all). `flt.limit` is not read:
        the caller says the cap. `matched` counts every trace the conditions match."""
        ...

    def model_calls(self, trace_ids: Sequence[str], kinds: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Every span of one of `kinds` in the given traces, as full span rows keyed by column name, per
        trace in start order (then span id). Each given trace is a key, with an empty list if none."""
        ...

    def recorded_pairs(self, run: str) -> list[RecordedPair]:
        """Each model call the run replayed (not its judge's calls) beside the original it names."""
        ...

    def payloads(self, digests: Sequence[str]) -> Payloads:
        """The payloads of these digests, located once for all of them."""
        ...


@dataclass(frozen=True)
class NewReplayRun:
    """A run to create: its name, the candidate, the selection and options as given, and its traces."""

    name: str
    target: str
    selection: dict[str, Any]
    options: dict[str, Any]
    trace_ids: list[str]


@dataclass(frozen=True)
class ReplayRun:
    """A stored run. `claimed_by` is the runner that holds it now (None: nobody), `claimed_at` when it
    last claimed it or saved an item."""

    name: str
    target: str
    selection: dict[str, Any]
    options: dict[str, Any]
    created_at: datetime
    finished_at: datetime | None = None
    claimed_by: str | None = None
    claimed_at: datetime | None = None


@dataclass(frozen=True)
class ReplayItem:
    """One trace of a run: its status (one of ITEM_STATUSES) and the result saved with it."""

    trace_id: str
    status: str
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunCounts:
    """A run's items by status; `diverged` counts the done ones where the candidate diverged."""

    done: int = 0
    diverged: int = 0
    failed: int = 0
    skipped: int = 0
    pending: int = 0


class ReplayRunRepository(Protocol):
    """Replay runs and their items. Safe to call from several threads at once."""

    def create(self, run: NewReplayRun) -> None:
        """Store a new run, unclaimed, with each trace pending. Raises StoreConflict when a run of that
        name exists (another runner created it first), leaving it as it was."""
        ...

    def claim(self, name: str, owner: str, replacing: str | None) -> bool:
        """Compare-and-set the run's holder from `replacing` (None: unclaimed) to `owner`. True when
        this call took it; False when the holder was another, and then nothing changes."""
        ...

    def load(self, name: str) -> ReplayRun | None:
        """The run of that name, or None."""
        ...

    def items(self, name: str) -> list[ReplayItem]:
        """Every item of the run, by trace id."""
        ...

    def unfinished(self, name: str) -> list[str]:
        """The trace ids still to replay (pending, or failed and so to retry), sorted."""
        ...

    def counts(self, name: str) -> RunCounts:
        """The run's items counted by status."""
        ...

    def save_item(self, name: str, owner: str, trace_id: str, status: str, result: dict[str, Any]) -> None:
        """Store a trace's outcome and renew `owner`'s claim. Raises StoreConflict when `owner` no longer
        holds the run (the item is then not changed)."""
        ...

    def finish(self, name: str, owner: str) -> None:
        """Mark the run finished now and give up `owner`'s claim."""
        ...

    def release(self, name: str, owner: str) -> None:
        """Give up `owner`'s claim, if it still holds the run; the run stays unfinished."""
        ...

    def close(self) -> None: ...
