"""The query copy: for each live span segment, a columnar copy in which every free attribute is a
column of its own ("attributes.<key>"), read by the embedded SpanQuery and SliceCandidates.

Why: the record keeps free attributes in one map column, and a lookup in a map reads every key of
every row (DuckDB scans the map's entries per row). On 10 million spans with six attributes a group-by
on a map key took 1.2 s for a count and 3.6 s with latency percentiles, and it grows with the number
of keys a span carries; on a column of its own the same group-by reads one column (see
bench/RESULTS-telemetry.md). Segments never change once written, so a copy is built once per segment
(on the first query that needs it) and removed when its segment is compacted away. Payload digests,
headers and decisions are left out of the copy; they stay in the record.

At most MAX_PROMOTED keys per segment become columns (the most frequent); if a segment has more, the
copy keeps the map too, and a key that is not a column there is looked up in the map.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from airlock.query.fields import ATTR_PREFIX
from airlock.store.embedded.layout import DataDir
from airlock.store.embedded.segments import Segment, list_segments, live_segments

MAX_PROMOTED = 256
LEFT_OUT = frozenset(
    {
        "attributes",
        "airlock.payload.request",
        "airlock.payload.upstream_request",
        "airlock.payload.response",
        "airlock.request.headers",
        "airlock.decisions",
        "airlock.schema_version",
    }
)
_VERSION = "1"  # of the copy's layout; a copy made under another is rebuilt


def copies_dir(data: DataDir) -> Path:
    return data.root / "cache" / f"query-v{_VERSION}"


def promote_attributes(
    attrs: pa.Array | pa.ChunkedArray, limit: int = MAX_PROMOTED
) -> tuple[dict[str, pa.Array], bool]:
    """The map column as one string column per key (null where a row lacks the key), for the `limit`
    most frequent keys; and whether keys were left over."""
    if isinstance(attrs, pa.ChunkedArray):
        attrs = attrs.combine_chunks() if attrs.num_chunks != 1 else attrs.chunk(0)
    n = len(attrs)
    if n == 0:
        return {}, False
    raw = attrs.offsets.to_numpy()  # of the whole child arrays, also when attrs is a slice of them
    offsets = raw - raw[0]
    lengths = np.diff(offsets)
    if attrs.null_count:  # a null map may still span entries in its child arrays
        lengths = np.where(attrs.is_null().to_numpy(zero_copy_only=False), 0, lengths)
    keys = attrs.keys.slice(int(raw[0]), int(raw[-1] - raw[0]))
    items = attrs.items.slice(int(raw[0]), int(raw[-1] - raw[0]))
    if len(keys) == 0:
        return {}, False
    if attrs.null_count:
        valid = np.repeat(~attrs.is_null().to_numpy(zero_copy_only=False), np.diff(offsets))
        keys, items = keys.filter(pa.array(valid)), items.filter(pa.array(valid))
    regular = _regular_layout(keys, items, lengths, limit)
    if regular is not None:
        return regular, False
    row_of = np.repeat(np.arange(n, dtype=np.int64), lengths)
    encoded = pc.dictionary_encode(keys)
    key_index = encoded.indices.to_numpy(zero_copy_only=False)
    names = encoded.dictionary.to_pylist()
    counts = np.bincount(key_index, minlength=len(names))
    order = np.argsort(key_index, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    ranked = sorted(range(len(names)), key=lambda j: -counts[j])
    out: dict[str, pa.Array] = {}
    for j in ranked[:limit]:
        entries = order[starts[j] : starts[j + 1]]
        position = np.full(n, -1, dtype=np.int64)
        position[row_of[entries]] = np.arange(len(entries))  # a key twice in one row: the last wins
        values = items.take(pa.array(entries))
        out[names[j]] = values.take(pa.array(position, mask=position < 0))
    return out, len(names) > limit


def _regular_layout(keys: pa.Array, items: pa.Array, lengths: np.ndarray, limit: int) -> dict[str, pa.Array] | None:
    """The common case, done without sorting: every row has the same keys in the same order (one app
    setting the same attributes), so key j of every row sits at j, j+L, j+2L, ... of the flat arrays."""
    width = int(lengths[0])
    if width == 0 or width > limit or not np.all(lengths == width):
        return None
    first = keys.slice(0, width)
    if len(set(first.to_pylist())) != width:
        return None
    n = len(lengths)
    tiled = first.take(pa.array(np.tile(np.arange(width, dtype=np.int32), n)))
    if not pc.all(pc.equal(keys, tiled)).as_py():
        return None
    return {name: items.take(pa.array(np.arange(j, n * width, width))) for j, name in enumerate(first.to_pylist())}


def build_copy(segment: Path, target: Path) -> None:
    """Write the query copy of one span segment (temporary name, then rename)."""
    schema = pq.read_schema(segment)
    kept = [name for name in schema.names if name not in LEFT_OUT]
    table = pq.read_table(segment, columns=[*kept, "attributes"] if "attributes" in schema.names else kept)
    columns = {name: table.column(name) for name in kept}
    if "attributes" in schema.names:
        promoted, leftover = promote_attributes(table.column("attributes"))
        for key, values in promoted.items():
            columns[ATTR_PREFIX + key] = values
        if leftover:
            columns["attributes"] = table.column("attributes")
    copy = pa.table(columns) if columns else pa.table({"start_ns": pa.array([], pa.int64())})
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    pq.write_table(copy, tmp, compression="zstd", row_group_size=122_880)
    os.replace(tmp, target)


@dataclass(frozen=True)
class CopySet:
    paths: list[Path]
    built: int  # copies made by this call
    removed: int  # copies of segments no longer live

    def columns(self) -> set[str]:
        names: set[str] = set()
        for p in self.paths:
            names.update(pq.read_schema(p).names)
        return names


def _tiling(segment: Segment, copies: list[Segment]) -> list[Segment] | None:
    """Existing copies of the same writer that cover the segment's range exactly, in order: the copies of
    the segments a compaction merged. Their concatenation is the merged segment's copy."""
    parts = sorted(
        c for c in copies if c.writer == segment.writer and segment.first <= c.first and c.last <= segment.last
    )
    expected = segment.first
    chosen: list[Segment] = []
    for c in parts:
        if c.first == expected:
            chosen.append(c)
            expected = c.last + 1
    return chosen if chosen and expected == segment.last + 1 and len(chosen) > 1 else None


def _rows(parts: list[Segment]) -> int:
    return sum(pq.ParquetFile(p.path).metadata.num_rows for p in parts)


def _concat_copies(parts: list[Segment], target: Path) -> None:
    tables = [pq.read_table(p.path) for p in parts]
    merged = pa.concat_tables(tables, promote_options="permissive")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    pq.write_table(merged, tmp, compression="zstd", row_group_size=122_880)
    os.replace(tmp, target)


def _stamped(meta: pq.FileMetaData) -> bool:
    """Whether a segment's spans carry tail sampling's adjusted counts (from the column statistics)."""
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    if "airlock.sample.rate" not in names:
        return False
    i = names.index("airlock.sample.rate")
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(i).statistics
        if stats is None or not stats.has_null_count or stats.null_count < meta.row_group(g).num_rows:
            return True
    return False


def ensure_copies(data: DataDir, attempts: int = 3) -> CopySet:
    """A query copy for every live span segment: existing ones reused, a compacted segment's made by
    joining its inputs' copies, the others built; copies of segments no longer live are removed. A
    segment compacted away while we worked means the listing is stale: it is taken again."""
    for _ in range(attempts - 1):
        try:
            return _ensure_copies(data)
        except FileNotFoundError:
            continue
    return _ensure_copies(data)


def _ensure_copies(data: DataDir) -> CopySet:
    folder = copies_dir(data)
    folder.mkdir(parents=True, exist_ok=True)
    live = live_segments(data.spans)
    wanted = {seg.path.name: seg.path for seg in live}
    existing = list_segments(folder)
    paths, built = [], 0
    for seg in live:
        target = folder / seg.path.name
        if not target.exists():
            parts = _tiling(seg, existing)
            meta = pq.ParquetFile(seg.path).metadata
            if parts is not None and _rows(parts) == meta.num_rows and not _stamped(meta):
                _concat_copies(parts, target)
            else:  # a compaction that dropped rows or stamped adjusted counts (tail sampling): a copy of its own
                build_copy(seg.path, target)
            built += 1
        paths.append(target)
    removed = 0
    for stale in folder.iterdir():
        if stale.name not in wanted and not stale.name.startswith("."):
            stale.unlink(missing_ok=True)
            removed += 1
    return CopySet(sorted(paths), built, removed)
