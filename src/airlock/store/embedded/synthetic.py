"""Synthetic span segments, written straight to a data directory with DuckDB (millions of rows in
seconds), for the benchmark and the tests of the query and the slice finder. The rows have the span
schema's names and types for the columns they fill; the rest are absent, as in an older segment."""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from airlock.store.embedded.layout import DataDir
from airlock.store.embedded.segments import segment_name

HOUR_NS = 3_600 * 10**9


@dataclass(frozen=True)
class Attribute:
    name: str
    cardinality: int  # distinct values, drawn uniformly at random per span
    column: str | None = None  # a span column instead of a free attribute


@dataclass(frozen=True)
class Planted:
    """Spans matching every (attribute, value) fail with `error_rate` (and are `slow_factor` times slower)."""

    match: dict[str, str]
    error_rate: float = 0.6
    slow_factor: float = 1.0


@dataclass(frozen=True)
class Workload:
    spans: int
    attributes: list[Attribute]
    base_error_rate: float = 0.01
    planted: list[Planted] = field(default_factory=list)
    spans_per_segment: int = 1_000_000
    start_ns: int = 1_764_000_000 * 10**9
    span_interval_ns: int = 1_000_000  # spans are this far apart in start time
    seed: float = 0.42


def _value(attr: Attribute, row: str, salt: int) -> str:
    """A value of the attribute for the row: v<k>, k uniform in [0, cardinality), from a hash (deterministic)."""
    return f"'{attr.name[:1]}' || (hash({row} * 1000003 + {salt}) % {attr.cardinality})::VARCHAR"


def write_workload(data: DataDir, w: Workload, writer: str = "synthetic") -> int:
    """Write the workload as span segments of `writer`; returns the number of segments."""
    data.create()
    con = duckdb.connect(":memory:")
    con.execute(f"SELECT setseed({w.seed})")
    columns = [a for a in w.attributes if a.column]
    free = [a for a in w.attributes if not a.column]
    segments = 0
    for seq, first in enumerate(range(0, w.spans, w.spans_per_segment)):
        n = min(w.spans_per_segment, w.spans - first)
        row = f"(range + {first})"
        values = {a.name: _value(a, row, salt) for salt, a in enumerate(w.attributes)}
        fail = f"{w.base_error_rate}"
        slow = "1.0"
        for p in w.planted:
            cond = " AND ".join(f"({values[k]}) = '{v}'" for k, v in p.match.items())
            fail = f"CASE WHEN {cond} THEN {p.error_rate} ELSE {fail} END"
            slow = f"CASE WHEN {cond} THEN {p.slow_factor} ELSE {slow} END"
        column_sql = "".join(f', {values[a.name]} AS "{a.column}"' for a in columns)
        keys = ", ".join(f"'{a.name}'" for a in free)
        vals = ", ".join(values[a.name] for a in free)
        attributes = f"map([{keys}], [{vals}])" if free else "NULL::MAP(VARCHAR, VARCHAR)"
        path = data.spans / segment_name(writer, seq, seq)
        con.execute(
            f"""COPY (
                SELECT printf('%032x', {row}) AS trace_id,
                       printf('%016x', {row}) AS span_id,
                       'model.chat' AS kind,
                       ({w.start_ns} + {row} * {w.span_interval_ns})::BIGINT AS start_ns,
                       ({w.start_ns} + {row} * {w.span_interval_ns} + (dur * 1e6)::BIGINT)::BIGINT AS end_ns,
                       dur AS duration_ms,
                       CASE WHEN failed THEN 'error' ELSE 'ok' END AS status,
                       CASE WHEN failed THEN 'upstream_http_500' END AS error_type,
                       (200 + hash({row} + 7) % 800)::BIGINT AS "gen_ai.usage.input_tokens",
                       (20 + hash({row} + 11) % 300)::BIGINT AS "gen_ai.usage.output_tokens"
                       {column_sql},
                       {attributes} AS attributes
                FROM (SELECT range, random() < ({fail}) AS failed,
                             (50 + 400 * random()) * ({slow}) AS dur FROM range({n}))
            ) TO '{path}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 65536)"""
        )
        segments += 1
    con.close()
    return segments
