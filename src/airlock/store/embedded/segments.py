"""Parquet segments of spans and hops.

A segment is named <writer>.<first>-<last>.parquet: the range of the writer's batch numbers it holds.
A writer's flush writes a one-batch segment (first == last) to a temporary name and renames it, so a
reader never sees half a file. Compaction merges a run of adjacent segments into one whose range
covers theirs, renames it into place, then deletes the inputs. Readers list the directory and keep,
per writer, only segments not covered by a wider one, so the moment when both exist is invisible.
The blob index and the hops are written before the spans of the same range; a range counts as durable
once its spans file exists, and by then every payload its spans name can be found.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.store.embedded.blobs import INDEX_SCHEMA
from airlock.store.embedded.layout import DataDir

_NAME = re.compile(r"^(?P<writer>[A-Za-z0-9_-]+)\.(?P<first>\d{8})-(?P<last>\d{8})\.parquet$")


@dataclass(frozen=True, order=True)
class Segment:
    writer: str
    first: int
    last: int
    path: Path

    @property
    def level(self) -> int:
        span = self.last - self.first + 1
        return 0 if span <= 1 else max(1, math.ceil(math.log(span, 8)))


def segment_name(writer: str, first: int, last: int) -> str:
    return f"{writer}.{first:08d}-{last:08d}.parquet"


def list_segments(folder: Path) -> list[Segment]:
    """Every segment file in the folder, covered or not."""
    out = []
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    for name in names:
        m = _NAME.match(name)
        if m:
            out.append(Segment(m["writer"], int(m["first"]), int(m["last"]), folder / name))
    return sorted(out)


def live_segments(folder: Path) -> list[Segment]:
    """Segments not covered by a wider segment of the same writer."""
    by_writer: dict[str, list[Segment]] = {}
    for seg in list_segments(folder):
        by_writer.setdefault(seg.writer, []).append(seg)
    live = []
    for segs in by_writer.values():
        for s in segs:
            covered = any(
                o is not s and o.first <= s.first and s.last <= o.last and (o.last - o.first) > (s.last - s.first)
                for o in segs
            )
            if not covered:
                live.append(s)
    return sorted(live)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(table: pa.Table, path: Path) -> None:
    """Write to a temporary name, fsync, rename, fsync the folder: the file is whole once it exists, and
    stays so across a power loss, before anything it replaces (a write-ahead file, compacted inputs) goes."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd", row_group_size=65_536)
        _fsync(tmp)
    except (OSError, pa.ArrowException):
        tmp.unlink(missing_ok=True)  # a full disk: what the partial file took goes back (the spill may need it)
        raise
    os.replace(tmp, path)
    _fsync(path.parent)


class SegmentRetention(Protocol):
    """What compaction may merge and what it keeps (tail sampling plugs in here)."""

    def compactable_through(self, writer_id: str) -> int: ...
    def retain(self, spans: pa.Table, hops: pa.Table) -> tuple[pa.Table, pa.Table]: ...


class ParquetSegments:
    def __init__(self, data: DataDir, retention: SegmentRetention | None = None) -> None:
        self.data = data
        self.retention = retention

    def write(
        self, writer_id: str, seq: int, spans: pa.Table, hops: pa.Table, blob_index: pa.Table | None = None
    ) -> None:
        name = segment_name(writer_id, seq, seq)
        _write_atomic(blob_index if blob_index is not None else INDEX_SCHEMA.empty_table(), self.data.blob_index / name)
        _write_atomic(hops, self.data.hops / name)
        _write_atomic(spans, self.data.spans / name)

    def discard_partial(self, writer_id: str, seq: int) -> None:
        """Remove the index and hop files of a one-batch range whose spans file was never written."""
        name = segment_name(writer_id, seq, seq)
        if not (self.data.spans / name).exists():
            for folder in (self.data.blob_index, self.data.hops):
                (folder / name).unlink(missing_ok=True)

    def covers(self, writer_id: str, seq: int) -> bool:
        return any(s.writer == writer_id and s.first <= seq <= s.last for s in list_segments(self.data.spans))

    def compact(self, writer_id: str, min_segments: int) -> int:
        """Merge one run of at least `min_segments` adjacent same-level segments; returns files merged."""
        segs = [s for s in live_segments(self.data.spans) if s.writer == writer_id]
        if self.retention is not None:
            through = self.retention.compactable_through(writer_id)
            segs = [s for s in segs if s.last <= through]
        run: list[Segment] = []
        for s in segs:
            if run and (s.level != run[-1].level or s.first != run[-1].last + 1):
                if len(run) >= min_segments:
                    break
                run = []
            run.append(s)
        if len(run) < min_segments:
            return 0
        first, last = run[0].first, run[-1].last
        name = segment_name(writer_id, first, last)
        folders = ((self.data.blob_index, INDEX_SCHEMA), (self.data.hops, HOP_SCHEMA), (self.data.spans, SPAN_SCHEMA))
        merged: dict[Path, pa.Table] = {}
        for folder, schema in folders:
            inputs = [folder / s.path.name for s in run]
            tables = [pq.read_table(p) for p in inputs if p.exists()]
            merged[folder] = pa.concat_tables(tables, promote_options="default") if tables else schema.empty_table()
            if folder == self.data.blob_index and merged[folder].num_rows:
                merged[folder] = merged[folder].sort_by("digest")  # lookups by digest prune row groups
        if self.retention is not None:
            merged[self.data.spans], merged[self.data.hops] = self.retention.retain(
                merged[self.data.spans], merged[self.data.hops]
            )
        for folder, _ in folders:
            _write_atomic(merged[folder], folder / name)
        for folder in (self.data.spans, self.data.hops, self.data.blob_index):
            for s in run:
                (folder / s.path.name).unlink(missing_ok=True)
        return len(run)
