"""What the OTLP exporter reads and keeps: a feed of the spans written since a cursor, per writer, and
a repository of those cursors. Several gateway workers may run an exporter over one record, so a
cursor moves by compare-and-set: a move from a position another process has already left is refused."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Cursor:
    """Where a writer's export stands, as its feed defines it. For the embedded feed: every segment of
    the writer up to seq_done sent, and `partial_rows` rows of the segment file named `partial`."""

    seq_done: int = -1
    partial: str | None = None
    partial_rows: int = 0


@dataclass
class ExportBatch:
    rows: list[dict[str, Any]] = field(default_factory=list)  # spans as span-schema dicts, in write order
    advance: dict[str, Cursor] = field(default_factory=dict)  # writer -> its cursor once this batch is accepted
    since: dict[str, Cursor | None] = field(default_factory=dict)  # writer -> the cursor it was read from
    resent: int = 0  # rows sent again because a compaction merged them with unsent ones

    @property
    def empty(self) -> bool:
        return not self.advance


class ExportFeed(Protocol):
    def next_batch(self, cursors: Mapping[str, Cursor], limit: int) -> ExportBatch:
        """Up to `limit` spans written after each writer's cursor (a writer without one: from its first
        span), writers in name order; `advance` holds a new cursor for every writer the batch read from
        and `since` the cursor it started at (None: none). At least once: a span may come again (counted
        in `resent`), none is skipped. An empty batch (no `advance`) when there is nothing new. Raises
        StoreError when the store fails."""
        ...

    def ends(self) -> tuple[dict[str, Cursor], int]:
        """A cursor at the end of everything each writer has written so far, and how many stored units
        (segments, for the embedded feed) that passes over."""
        ...


@dataclass(frozen=True)
class CursorMove:
    expected: Cursor | None  # the cursor the mover read (None: the writer had none)
    to: Cursor


class ExportCursorRepository(Protocol):
    def load(self) -> dict[str, Cursor]:
        """Every writer's cursor."""
        ...

    def advance(self, moves: Mapping[str, CursorMove]) -> None:
        """Set each writer's cursor to `to`, all or none, if each still is `expected`; otherwise raise
        errors.StoreConflict and change nothing. Raises StoreError when the store fails."""
        ...

    def close(self) -> None: ...
