"""Where the sampler's output lives in the data directory, and its state in SQLite.

segments/sampling/decisions/  one row per decided trace (kept or dropped) and per late addition:
                              trace_id -> keep, reason, probability, adjusted count, the trace's totals
segments/sampling/summaries/  dropped traces aggregated per hour, key and status: count, spans,
                              tokens, cost (what stays of them once their spans are gone)

Files are named like span segments (sampler.<first pass>-<last pass>.parquet), written under a
temporary name and renamed, and merged when they pile up; readers keep only the widest."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from airlock.sampling.facts import TraceState
from airlock.sampling.sampler import Decision
from airlock.store.embedded import DataDir, DuckDBSpanReader, SQLiteState
from airlock.store.embedded.segments import Segment, live_segments, segment_name

_S, _I, _F, _B = pa.string(), pa.int64(), pa.float64(), pa.bool_()
DECISION_SCHEMA = pa.schema(
    [
        ("trace_id", _S),
        ("keep", _B),
        ("reason", _S),
        ("probability", _F),
        ("adjusted_count", _F),
        ("key", _S),
        ("status", _S),
        ("traces", _I),
        ("spans", _I),
        ("errors", _I),
        ("input_tokens", _I),
        ("output_tokens", _I),
        ("cost_usd", _F),
        ("start_ns", _I),
        ("duration_ms", _F),
        ("reserve", _B),
        ("early", _S),
        ("pass", _I),
    ]
)
SUMMARY_SCHEMA = pa.schema(
    [
        ("hour_ns", _I),
        ("key", _S),
        ("status", _S),
        ("traces", _I),
        ("spans", _I),
        ("errors", _I),
        ("input_tokens", _I),
        ("output_tokens", _I),
        ("cost_usd", _F),
        ("reserved", _I),
        ("pass", _I),
    ]
)
_WRITER = "sampler"
_HOUR_NS = 3600 * 10**9
_MERGE_AT = 16  # adjacent files of one level before they are merged into one


def sampling_dir(data: DataDir) -> Path:
    return data.root / "segments" / "sampling"


def decisions_dir(data: DataDir) -> Path:
    return sampling_dir(data) / "decisions"


def summaries_dir(data: DataDir) -> Path:
    return sampling_dir(data) / "summaries"


def decision_table(decisions: list[Decision], pass_no: int) -> pa.Table:
    cols: dict[str, list[Any]] = {name: [] for name in DECISION_SCHEMA.names}
    for d in decisions:
        for name in DECISION_SCHEMA.names:
            if name == "adjusted_count":
                cols[name].append(d.adjusted_count)
            elif name == "pass":
                cols[name].append(pass_no)
            else:
                cols[name].append(getattr(d, name))
    return pa.table(cols, schema=DECISION_SCHEMA)


def summary_table(decisions: list[Decision], pass_no: int) -> pa.Table:
    """Dropped traces, aggregated: what totals need once their spans are gone."""
    groups: dict[tuple[int, str, str], list[Any]] = {}
    for d in decisions:
        if d.keep:
            continue
        g = groups.setdefault((d.start_ns - d.start_ns % _HOUR_NS, d.key, d.status), [0, 0, 0, 0, 0, 0.0, 0])
        g[0] += d.traces
        g[1] += d.spans
        g[2] += d.errors
        g[3] += d.input_tokens
        g[4] += d.output_tokens
        g[5] += d.cost_usd
        g[6] += int(d.reserve and d.traces)
    rows = [dict(zip(SUMMARY_SCHEMA.names, [*k, *v, pass_no], strict=True)) for k, v in sorted(groups.items())]
    return pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA)


def _write_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)


def write_pass(data: DataDir, pass_no: int, decisions: list[Decision]) -> None:
    """The pass's decisions and drop summaries; rewriting the same pass (a retry) replaces them."""
    name = segment_name(_WRITER, pass_no, pass_no)
    _write_atomic(summary_table(decisions, pass_no), summaries_dir(data) / name)
    _write_atomic(decision_table(decisions, pass_no), decisions_dir(data) / name)


def merge_small_files(data: DataDir) -> int:
    """Merge a run of at least _MERGE_AT adjacent files of one level into one, as span compaction does,
    so the file count grows with the log of the passes. One process runs the sampler; readers keep
    only the widest file, so the moment both exist is invisible."""
    merged = 0
    for folder, schema in ((decisions_dir(data), DECISION_SCHEMA), (summaries_dir(data), SUMMARY_SCHEMA)):
        run: list[Segment] = []
        for seg in live_segments(folder):
            if run and (seg.level != run[-1].level or seg.first != run[-1].last + 1):
                if len(run) >= _MERGE_AT:
                    break
                run = []
            run.append(seg)
        if len(run) < _MERGE_AT:
            continue
        table = pa.concat_tables([pq.read_table(s.path) for s in run], promote_options="default")
        _write_atomic(table.cast(schema), folder / segment_name(_WRITER, run[0].first, run[-1].last))
        for s in run:
            s.path.unlink(missing_ok=True)
        merged += len(run)
    return merged


def file_listing(folder: Path) -> str | None:
    files = [str(s.path) for s in live_segments(folder)]
    if not files:
        return None
    return "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"


# How many traces each decided trace stands for: its adjusted count (1/p) when it was kept, 0 when it was
# dropped (its spans are gone, or kept only as replay reserve) or is only a late part kept for its error
# (the kept traces' adjusted counts already stand for it). One row per trace, however many fragments.
_TRACE_WEIGHTS = """
SELECT trace_id,
       coalesce(max(adjusted_count) FILTER (WHERE keep AND traces > 0), 0.0) AS weight,
       bool_or(keep) AS keep, bool_or(reserve) AS reserve,
       arg_max(reason, traces) FILTER (WHERE keep) AS reason
FROM read_parquet({listing}, union_by_name=true) GROUP BY trace_id"""


def trace_weights_sql(data: DataDir) -> str | None:
    """A SELECT of (trace_id, weight, keep, reserve, reason) for every trace the sampler decided; None
    before its first decision. Readers that count weight a span by its trace's row (a trace not in it
    stands for itself): unlike the stamps compaction writes, it holds for spans not yet compacted."""
    listing = file_listing(decisions_dir(data))
    return None if listing is None else _TRACE_WEIGHTS.format(listing=listing)


def create_trace_weights_view(con: Any, data: DataDir) -> None:
    """A temporary view `trace_weights` (trace_id, weight, ...) in a DuckDB connection: empty before the
    sampler's first decision, so that a LEFT JOIN on it leaves every span standing for itself."""
    weights = trace_weights_sql(data)
    empty = "SELECT NULL::VARCHAR AS trace_id, NULL::DOUBLE AS weight LIMIT 0"
    con.execute(f"CREATE TEMP VIEW trace_weights AS {weights or empty}")


class SampledReader(DuckDBSpanReader):
    """The record with the sampler's output beside it: views `sample_decisions`, `sample_summaries`
    and `sampled_spans` (the spans of kept traces, each with its trace's adjusted count and reason)."""

    def sql(self, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        # DuckDBSpanReader retries a query that races a compaction, but not the listing in _connect,
        # which can race one too (a file listed, then merged away before the view binds it).
        for attempt in range(3):
            try:
                return super().sql(query, params)
            except duckdb.IOException:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _connect(self) -> Any:
        con = super()._connect()
        for view, folder, schema in (
            ("sample_decisions", decisions_dir(self.data), DECISION_SCHEMA),
            ("sample_summaries", summaries_dir(self.data), SUMMARY_SCHEMA),
        ):
            listing = file_listing(folder)
            if listing:
                con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet({listing}, union_by_name=true)")
            else:
                con.register(f"{view}_empty", schema.empty_table())
                con.execute(f"CREATE VIEW {view} AS SELECT * FROM {view}_empty")
        con.execute(
            """CREATE VIEW sampled_spans AS
               WITH kept AS (SELECT trace_id, max(adjusted_count) AS adjusted_count,
                                    arg_max(reason, traces) AS reason
                             FROM sample_decisions WHERE keep GROUP BY trace_id)
               SELECT s.*, k.adjusted_count AS sample_adjusted_count, k.reason AS sample_reason
               FROM spans s JOIN kept k USING (trace_id)"""
        )
        return con


class SamplingState:
    """The sampler's SQLite tables: cursor, waiting traces, model, pass log."""

    def __init__(self, data: DataDir) -> None:
        self.db = SQLiteState(data.state_db)
        self.conn: sqlite3.Connection = self.db.conn

    def close(self) -> None:
        self.db.close()

    def cursors(self) -> dict[str, int]:
        return {w: int(s) for w, s in self.conn.execute("SELECT writer, through_seq FROM sampling_cursor")}

    def last_pass(self) -> int:
        row = self.conn.execute("SELECT COALESCE(MAX(pass), 0) FROM sampling_passes").fetchone()
        return int(row[0])

    def load(self) -> tuple[dict[str, Any] | None, list[TraceState]]:
        row = self.conn.execute("SELECT model FROM sampling_model WHERE id = 1").fetchone()
        model = orjson.loads(row[0]) if row else None
        pending = [
            TraceState.from_row(orjson.loads(s)) for (s,) in self.conn.execute("SELECT state FROM sampling_pending")
        ]
        return model, pending

    def commit(
        self,
        pass_no: int,
        at_ns: int,
        cursors: dict[str, int],
        waiting: dict[str, int],
        changed: Iterable[TraceState],
        removed: Iterable[str],
        model: dict[str, Any],
        stats: dict[str, int],
    ) -> None:
        """Everything a pass changed, in one transaction: a crash before it replays the pass whole."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.executemany(
                "INSERT INTO sampling_cursor(writer, through_seq, decided_seq) VALUES (?, ?, ?)"
                " ON CONFLICT(writer) DO UPDATE SET through_seq = excluded.through_seq,"
                " decided_seq = excluded.decided_seq",
                [(w, through, min(through, waiting.get(w, through + 1) - 1)) for w, through in cursors.items()],
            )
            c.executemany("DELETE FROM sampling_pending WHERE trace_id = ?", [(t,) for t in removed])
            c.executemany(
                "INSERT OR REPLACE INTO sampling_pending(trace_id, state) VALUES (?, ?)",
                [(t.trace_id, orjson.dumps(t.to_row()).decode()) for t in changed],
            )
            c.execute(
                "INSERT OR REPLACE INTO sampling_model(id, pass, model) VALUES (1, ?, ?)",
                (pass_no, orjson.dumps(model).decode()),
            )
            c.execute(
                "INSERT INTO sampling_passes(pass, at_ns, spans_read, decided, kept, pending, skipped)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    pass_no,
                    at_ns,
                    stats["spans_read"],
                    stats["decided"],
                    stats["kept"],
                    stats["pending"],
                    stats["skipped"],
                ),
            )
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
