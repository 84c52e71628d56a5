"""Where the sampler's output lives in the data directory, and its state in SQLite.

segments/sampling/decisions/  one row per decided trace (kept or dropped) and per late addition:
                              trace_id -> keep, reason, probability, adjusted count, the trace's totals
segments/sampling/summaries/  dropped traces aggregated per hour, key and status: count, spans,
                              tokens, cost (what stays of them once their spans are gone)

Files are named like span segments (sampler.<first pass>-<last pass>.parquet), written under a
temporary name and renamed, and merged when they pile up; readers keep only the widest.

The protocols of airlock.store.sampling, embedded: ParquetSamplerFeed (span segments), ParquetDecisionSink,
DuckDBSampleReport, SQLiteSamplingState (migration 0005), EmbeddedRetentionReads, FileSamplerLock, and
EmbeddedRecordCollector (sampling_gc.py); `embedded_sampling_stores(data)` builds them for one data
directory. Each raises StoreError subclasses only (`store_errors`). `trace_weights_sql` and
`create_trace_weights_view` give the other embedded readers (ledger, energy, query) each trace's weight."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from airlock.errors import StoreConflict
from airlock.store.embedded.failures import store_errors
from airlock.store.embedded.layout import DataDir
from airlock.store.embedded.query import DuckDBSpanReader
from airlock.store.embedded.segments import Segment, live_segments, segment_name
from airlock.store.embedded.state import SQLiteState
from airlock.store.sampling import (
    DecidedTrace,
    DropSummary,
    FeedSegment,
    PassCommit,
    SamplingStores,
    StateSummary,
)

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


def decision_table(decisions: Sequence[DecidedTrace], pass_no: int) -> pa.Table:
    cols: dict[str, list[Any]] = {name: [] for name in DECISION_SCHEMA.names}
    for d in decisions:
        for name in DECISION_SCHEMA.names:
            cols[name].append(pass_no if name == "pass" else getattr(d, name))
    return pa.table(cols, schema=DECISION_SCHEMA)


def summary_table(summaries: Sequence[DropSummary], pass_no: int) -> pa.Table:
    rows = [{name: pass_no if name == "pass" else getattr(s, name) for name in SUMMARY_SCHEMA.names} for s in summaries]
    return pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA)


def _write_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)


class ParquetDecisionSink:
    """Decisions and drop summaries as Parquet files beside the span segments (see the module's docstring)."""

    def __init__(self, data: DataDir) -> None:
        self.data = data

    def write_pass(self, pass_no: int, decisions: Sequence[DecidedTrace], summaries: Sequence[DropSummary]) -> None:
        """The pass's decisions and drop summaries; rewriting the same pass (a retry) replaces them."""
        name = segment_name(_WRITER, pass_no, pass_no)
        with store_errors(f"writing sampling pass {pass_no}"):
            _write_atomic(summary_table(summaries, pass_no), summaries_dir(self.data) / name)
            _write_atomic(decision_table(decisions, pass_no), decisions_dir(self.data) / name)

    def merge_small_files(self) -> int:
        """Merge a run of at least _MERGE_AT adjacent files of one level into one, as span compaction does,
        so the file count grows with the log of the passes. One process runs the sampler; readers keep
        only the widest file, so the moment both exist is invisible."""
        merged = 0
        with store_errors("merging the sampler's files"):
            for folder, schema in (
                (decisions_dir(self.data), DECISION_SCHEMA),
                (summaries_dir(self.data), SUMMARY_SCHEMA),
            ):
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


class ParquetSamplerFeed:
    """The span segments as the sampler reads them."""

    def __init__(self, data: DataDir) -> None:
        self.data = data

    def segments_after(self, cursors: Mapping[str, int]) -> list[FeedSegment]:
        with store_errors("listing span segments"):
            segments = live_segments(self.data.spans)
        return [FeedSegment(s.writer, s.first, s.last) for s in segments if s.last > cursors.get(s.writer, -1)]

    def span_rows(self, segment: FeedSegment, columns: Sequence[str], batch_rows: int) -> Iterator[dict[str, Any]]:
        path = self.data.spans / segment_name(segment.writer, segment.first, segment.last)
        with store_errors(f"reading span segment {path.name}"):
            f = pq.ParquetFile(path)
            present = set(f.schema_arrow.names)
            wanted = [c for c in dict.fromkeys(columns) if c in present]
            for batch in f.iter_batches(batch_size=batch_rows, columns=wanted):
                yield from batch.to_pylist()


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


class DuckDBSampleReport:
    """The sample report's aggregates, by DuckDB over the sampler's files."""

    def __init__(self, data: DataDir) -> None:
        self.reader = SampledReader(data)

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with store_errors("reading the sampler's decisions"):
            return self.reader.sql(query, params)

    def by_outcome_and_reason(self) -> list[dict[str, Any]]:
        return self._rows(
            """SELECT CASE WHEN keep THEN 'kept' WHEN reserve THEN 'dropped (replay reserve)' ELSE 'dropped' END
                      AS outcome,
                      reason, count(*) FILTER (WHERE traces = 1) AS traces, sum(spans) AS spans,
                      min(probability) AS min_p, max(probability) AS max_p
               FROM sample_decisions GROUP BY 1, 2 ORDER BY 1 DESC, 3 DESC"""
        )

    def by_key(self) -> list[dict[str, Any]]:
        return self._rows(
            """SELECT key,
                      sum(traces) AS traces, sum(adjusted_count * traces) AS traces_est,
                      sum(spans) AS spans, sum(adjusted_count * spans) AS spans_est,
                      sum(errors) AS errors, sum(adjusted_count * errors) AS errors_est,
                      sum(input_tokens + output_tokens) AS tokens,
                      sum(adjusted_count * (input_tokens + output_tokens)) AS tokens_est,
                      sum(cost_usd) AS cost, sum(adjusted_count * cost_usd) AS cost_est,
                      count(*) FILTER (WHERE keep AND traces = 1) AS kept
               FROM sample_decisions GROUP BY key ORDER BY traces DESC"""
        )

    def drops(self) -> list[dict[str, Any]]:
        return self._rows(
            """SELECT key, status, sum(traces) AS traces, sum(spans) AS spans,
                      sum(input_tokens + output_tokens) AS tokens, sum(cost_usd) AS cost,
                      sum(reserved) AS reserved
               FROM sample_summaries GROUP BY 1, 2 ORDER BY traces DESC"""
        )

    def newest_start_ns(self) -> int | None:
        newest = self._rows("SELECT max(start_ns) AS t FROM sample_decisions")[0]["t"]
        return None if newest is None else int(newest)

    def kept_by_hour(self, since_ns: int) -> list[dict[str, Any]]:
        return self._rows(
            """SELECT start_ns - start_ns % 3600000000000 AS hour_ns, sum(spans) AS kept_spans,
                      count(*) FILTER (WHERE traces = 1) AS kept_traces
               FROM sample_decisions WHERE keep AND start_ns >= ? GROUP BY 1 ORDER BY 1""",
            [since_ns],
        )

    def early_decisions(self) -> dict[str, int]:
        rows = self._rows("SELECT early, count(*) AS n FROM sample_decisions WHERE early != '' GROUP BY 1")
        return {r["early"]: int(r["n"]) for r in rows}

    def decisions_of(self, trace_prefix: str) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT * FROM sample_decisions WHERE starts_with(trace_id, ?) ORDER BY pass, traces DESC", [trace_prefix]
        )


class SQLiteSamplingState:
    """The sampler's SQLite tables (migration 0005): cursor, waiting traces, model, pass log."""

    def __init__(self, data: DataDir) -> None:
        with store_errors("opening the state database"):
            self.db = SQLiteState(data.state_db)
        self._conn = self.db.conn

    def close(self) -> None:
        with store_errors("closing the state database"):
            self.db.close()

    def cursors(self) -> dict[str, int]:
        with store_errors("reading the sampler's cursor"):
            return {w: int(s) for w, s in self._conn.execute("SELECT writer, through_seq FROM sampling_cursor")}

    def decided_through(self, writer_id: str) -> int:
        with store_errors("reading the sampler's cursor"):
            row = self._conn.execute(
                "SELECT decided_seq FROM sampling_cursor WHERE writer = ?", (writer_id,)
            ).fetchone()
        return int(row[0]) if row else -1

    def last_pass(self) -> int:
        with store_errors("reading the sampler's pass log"):
            row = self._conn.execute("SELECT COALESCE(MAX(pass), 0) FROM sampling_passes").fetchone()
        return int(row[0])

    def model(self) -> dict[str, Any] | None:
        with store_errors("reading the sampler's model"):
            row = self._conn.execute("SELECT model FROM sampling_model WHERE id = 1").fetchone()
        return orjson.loads(row[0]) if row else None

    def pending(self) -> list[list[Any]]:
        with store_errors("reading the sampler's waiting traces"):
            return [orjson.loads(s) for (s,) in self._conn.execute("SELECT state FROM sampling_pending")]

    def summary(self) -> StateSummary:
        with store_errors("reading the sampler's state"):
            passes, last, skipped = self._conn.execute(
                "SELECT count(*), max(at_ns), coalesce(sum(skipped), 0) FROM sampling_passes"
            ).fetchone()
            pending = self._conn.execute("SELECT count(*) FROM sampling_pending").fetchone()[0]
        return StateSummary(
            passes=int(passes),
            last_pass_ns=None if last is None else int(last),
            skipped=int(skipped),
            pending=int(pending),
            model=self.model(),
        )

    def commit(self, change: PassCommit) -> None:
        """Everything a pass changed, in one transaction: a crash before it replays the pass whole. The
        pass must follow the last committed one (checked under the write lock), or StoreConflict."""
        with store_errors(f"committing sampling pass {change.pass_no}"):
            self._commit(change)

    def _commit(self, change: PassCommit) -> None:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            last = int(c.execute("SELECT COALESCE(MAX(pass), 0) FROM sampling_passes").fetchone()[0])
            if last != change.pass_no - 1:
                raise StoreConflict(
                    f"sampling pass {change.pass_no} was begun after pass {change.pass_no - 1}, but pass {last} "
                    "is committed: another process ran the sampler"
                )
            waiting = change.waiting
            c.executemany(
                "INSERT INTO sampling_cursor(writer, through_seq, decided_seq) VALUES (?, ?, ?)"
                " ON CONFLICT(writer) DO UPDATE SET through_seq = excluded.through_seq,"
                " decided_seq = excluded.decided_seq",
                [(w, through, min(through, waiting.get(w, through + 1) - 1)) for w, through in change.cursors.items()],
            )
            c.executemany("DELETE FROM sampling_pending WHERE trace_id = ?", [(t,) for t in change.removed])
            c.executemany(
                "INSERT OR REPLACE INTO sampling_pending(trace_id, state) VALUES (?, ?)",
                [(t, orjson.dumps(row).decode()) for t, row in change.changed.items()],
            )
            c.execute(
                "INSERT OR REPLACE INTO sampling_model(id, pass, model) VALUES (1, ?, ?)",
                (change.pass_no, orjson.dumps(change.model).decode()),
            )
            stats = change.stats
            c.execute(
                "INSERT INTO sampling_passes(pass, at_ns, spans_read, decided, kept, pending, skipped)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    change.pass_no,
                    change.at_ns,
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


class EmbeddedRetentionReads:
    """What compaction reads: the cursor from SQLite (a short connection per call, so a writer process holds
    none open) and the verdicts from the decision files."""

    def __init__(self, data: DataDir) -> None:
        self.data = data

    def decided_through(self, writer_id: str) -> int:
        with store_errors("reading the sampler's cursor"):
            try:
                conn = sqlite3.connect(self.data.state_db, timeout=10.0)
                try:
                    row = conn.execute(
                        "SELECT decided_seq FROM sampling_cursor WHERE writer = ?", (writer_id,)
                    ).fetchone()
                finally:
                    conn.close()
            except sqlite3.OperationalError:  # no sampler has run yet (its tables do not exist)
                return -1
        return int(row[0]) if row else -1

    def verdicts(self, trace_ids: pa.Array) -> pa.Table | None:
        ids = pa.table({"trace_id": trace_ids})
        with store_errors("reading the sampler's decisions"):
            try:
                return self._verdicts(ids)
            except duckdb.IOException:  # the sampler merged its files under us: list them again
                return self._verdicts(ids)

    def _verdicts(self, ids: pa.Table) -> pa.Table | None:
        weights = trace_weights_sql(self.data)
        if weights is None:
            return None
        con = duckdb.connect(":memory:")
        try:
            con.register("ids", ids)
            return con.sql(
                f"""SELECT w.trace_id, w.keep, w.reserve, w.weight AS rate,
                           coalesce(w.reason, CASE WHEN w.reserve THEN 'replay reserve' ELSE 'dropped' END) AS reason
                    FROM ({weights}) w JOIN ids USING (trace_id)"""
            ).to_arrow_table()
        finally:
            con.close()


class FileSamplerLock:
    """An exclusive flock on run/<name>.lock (the kernel lets it go if the process dies): the sampler's,
    or any other leader lock of this node's processes."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def take(cls, data: DataDir, name: str = "sampler") -> FileSamplerLock | None:
        """The lock, or None if another process holds it."""
        with store_errors(f"taking the {name} lock"):
            data.run.mkdir(parents=True, exist_ok=True)
            fd = os.open(data.run / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
        return cls(fd)

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def embedded_sampling_stores(data: DataDir) -> SamplingStores:
    """Tail sampling's stores on one data directory."""
    from airlock.store.embedded.sampling_gc import EmbeddedRecordCollector

    return SamplingStores(
        feed=ParquetSamplerFeed(data),
        sink=ParquetDecisionSink(data),
        report=DuckDBSampleReport(data),
        retention=EmbeddedRetentionReads(data),
        collector=EmbeddedRecordCollector(data),
        open_state=lambda: SQLiteSamplingState(data),
        take_lock=lambda: FileSamplerLock.take(data),
    )
