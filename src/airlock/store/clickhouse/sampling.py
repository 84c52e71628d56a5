"""Tail sampling on the ClickHouse record: the protocols of airlock.store.sampling over the tables the
ClickHouse sink writes and the two tables of migration 0002 (`sample_decisions`, `sample_summaries`).

- `ClickHouseSamplerFeed`: a segment is one writer batch that the `batches` table names (that row is
  inserted last, so a batch still being written is never read in part), first == last == its seq, as
  the export feed reads them. Nothing merges batches here, so no segment is ever skipped.
- `ClickHouseDecisionSink`: a pass's decisions and drop summaries as inserts under a deduplication token
  made from the pass and a digest of its rows: a pass written again with the same rows (a retry, or an
  insert the client resent) adds nothing; written again with other rows (a pass that never committed,
  run again), the pass's earlier rows are deleted first. ClickHouse merges the parts itself, so
  `merge_small_files` has nothing to do.
- `ClickHouseSampleReport`: DuckDBSampleReport's aggregates in ClickHouse's SQL, with the same answers.
- `ClickHouseRetentionReads`: how far the sampler has decided, from the state repository the caller gives
  (PostgreSQL on a scale-out deployment); the verdicts from `sample_decisions`.
- `ClickHouseRecordCollector` (sampling_gc.py): `airlock sample gc` on the tables.

`trace_weights_subquery` is each decided trace's weight for the other ClickHouse readers (query, ledger), so
their totals are unbiased before anything is pruned. `clickhouse_sampling_stores` builds them all."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa

from airlock.store.clickhouse.schema import BATCHES, SPANS
from airlock.store.clickhouse.transport import ClickHouseTransport, column_names, quoted_list
from airlock.store.embedded.sampling import DECISION_SCHEMA, decision_table, summary_table
from airlock.store.sampling import (
    DecidedTrace,
    DropSummary,
    FeedSegment,
    SamplerLock,
    SamplingStateRepository,
    SamplingStores,
)

DECISIONS, SUMMARIES = "sample_decisions", "sample_summaries"
_DECISION_COLUMNS = quoted_list(DECISION_SCHEMA.names)
_HOUR_NS = 3_600_000_000_000

# How many traces each decided trace stands for, as store/embedded/sampling.py's _TRACE_WEIGHTS: its
# adjusted count when kept (not only for a late error), else 0; one row per trace however many fragments.
# `reason` is NULL for a trace not kept (maxIf/argMaxIf answer the type's default where nothing matched).
TRACE_WEIGHTS_SQL = f"""
SELECT trace_id, w AS weight, k AS keep, r AS reserve, why AS reason
FROM (SELECT trace_id, maxIf(adjusted_count, keep AND traces > 0) AS w, max(keep) AS k, max(reserve) AS r,
             if(max(keep), argMaxIf(reason, traces, keep), NULL) AS why
      FROM {DECISIONS} GROUP BY trace_id)"""


def trace_weights_subquery() -> str:
    """(trace_id, sample_weight) of every decided trace, to LEFT JOIN onto spans (or items) by trace id:
    `sample_weight` is Nullable, so a trace the sampler has not decided joins NULL whatever join_use_nulls
    says, and `coalesce(sample_weight, <the span's stamp>, 1.0)` weights a span as the embedded readers do."""
    return f"(SELECT trace_id, toNullable(weight) AS sample_weight FROM ({TRACE_WEIGHTS_SQL}))"


def _digest(*tables: pa.Table) -> str:
    h = hashlib.sha256()
    for table in tables:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()[:24]


class ClickHouseSamplerFeed:
    """SamplerFeed over the spans table, a writer batch at a time."""

    def __init__(self, transport: ClickHouseTransport) -> None:
        self.transport = transport
        self._span_columns: set[str] | None = None

    def segments_after(self, cursors: Mapping[str, int]) -> list[FeedSegment]:
        writers = sorted(cursors)
        rows = self.transport.query_rows(
            f"SELECT DISTINCT writer_id, seq FROM {BATCHES}"
            " WHERE seq > transform(writer_id, {writers:Array(String)}, {done:Array(Int64)}, toInt64(-1))"
            " ORDER BY writer_id, seq",
            {"writers": writers, "done": [int(cursors[w]) for w in writers]},
        )
        return [FeedSegment(str(r["writer_id"]), int(r["seq"]), int(r["seq"])) for r in rows]

    def span_rows(self, segment: FeedSegment, columns: Sequence[str], batch_rows: int) -> Iterator[dict[str, Any]]:
        """The batch's spans in start order (then span id: the table keeps no row order), `batch_rows` at
        a time; maps as dicts."""
        if self._span_columns is None:
            self._span_columns = set(column_names(self.transport, SPANS))
        wanted = [c for c in dict.fromkeys(columns) if c in self._span_columns]
        if not wanted:
            return
        table = self.transport.query_arrow(
            f"SELECT {quoted_list(wanted)} FROM {SPANS}"
            " WHERE writer_id = {w:String} AND seq >= {first:Int64} AND seq <= {last:Int64}"
            " ORDER BY start_ns, span_id",
            {"w": segment.writer, "first": segment.first, "last": segment.last},
        )
        maps = [f.name for f in table.schema if pa.types.is_map(f.type)]
        for batch in table.to_batches(max_chunksize=batch_rows):
            for row in batch.to_pylist():
                for name in maps:
                    if row[name] is not None:
                        row[name] = dict(row[name])
                yield row


class ClickHouseDecisionSink:
    """DecisionSink into sample_decisions and sample_summaries (see the module's docstring)."""

    def __init__(self, transport: ClickHouseTransport) -> None:
        self.transport = transport

    def write_pass(self, pass_no: int, decisions: Sequence[DecidedTrace], summaries: Sequence[DropSummary]) -> None:
        """The pass's rows, replacing any other rows an earlier try of the same pass wrote."""
        tables = {
            DECISIONS: decision_table(decisions, pass_no),
            SUMMARIES: summary_table(summaries, pass_no),
        }
        token = f"sampling.{int(pass_no)}.{_digest(*tables.values())}"
        for name, table in tables.items():
            self._replace(name, pass_no, token, table)

    def _replace(self, table: str, pass_no: int, token: str, rows: pa.Table) -> None:
        params = {"pass": pass_no, "token": token}
        written = self.transport.query_rows(
            f"SELECT countIf(write_token = {{token:String}}) AS ours, countIf(write_token != {{token:String}}) AS other"
            f" FROM {table} WHERE `pass` = {{pass:Int64}}",
            params,
        )[0]
        if int(written["other"]):
            self.transport.command(
                f"DELETE FROM {table} WHERE `pass` = {{pass:Int64}} AND write_token != {{token:String}}", params
            )
        if int(written["ours"]) >= rows.num_rows:
            return  # this very write is in already
        data = rows.append_column("write_token", pa.array([token] * rows.num_rows, pa.string()))
        self.transport.insert_arrow(table, data, dedup_token=token)
        landed = self.transport.query_rows(
            f"SELECT count() AS n FROM {table} WHERE `pass` = {{pass:Int64}} AND write_token = {{token:String}}",
            params,
        )[0]
        if int(landed["n"]) < rows.num_rows:
            # The engine dropped the insert as one it had seen under this token, but those rows were deleted
            # since (the pass was written with these rows, then others, then these again): insert them anew.
            self.transport.insert_arrow(table, data, dedup_token=f"{token}.{uuid.uuid4().hex[:12]}")

    def merge_small_files(self) -> int:
        """Nothing to do: ClickHouse merges the tables' parts itself."""
        return 0


class ClickHouseSampleReport:
    """SampleReport over sample_decisions and sample_summaries, answering as DuckDBSampleReport does.
    ClickHouse puts an alias in place of its name anywhere in the SELECT, so each aggregate is named apart
    from the columns it reads, and renamed outside."""

    def __init__(self, transport: ClickHouseTransport) -> None:
        self.transport = transport

    def by_outcome_and_reason(self) -> list[dict[str, Any]]:
        return self.transport.query_rows(
            "SELECT o AS outcome, why AS reason, n AS traces, s AS spans, min_p, max_p FROM ("
            " SELECT multiIf(keep, 'kept', reserve, 'dropped (replay reserve)', 'dropped') AS o, reason AS why,"
            " countIf(traces = 1) AS n, sum(spans) AS s, min(probability) AS min_p, max(probability) AS max_p"
            f" FROM {DECISIONS} GROUP BY o, why) ORDER BY outcome DESC, traces DESC"
        )

    def by_key(self) -> list[dict[str, Any]]:
        return self.transport.query_rows(
            "SELECT k AS `key`, t AS traces, traces_est, s AS spans, spans_est, e AS errors, errors_est,"
            " tokens, tokens_est, c AS cost, cost_est, kept FROM ("
            " SELECT `key` AS k,"
            " sum(traces) AS t, sum(adjusted_count * traces) AS traces_est,"
            " sum(spans) AS s, sum(adjusted_count * spans) AS spans_est,"
            " sum(errors) AS e, sum(adjusted_count * errors) AS errors_est,"
            " sum(input_tokens + output_tokens) AS tokens,"
            " sum(adjusted_count * (input_tokens + output_tokens)) AS tokens_est,"
            " sum(cost_usd) AS c, sum(adjusted_count * cost_usd) AS cost_est,"
            " countIf(keep AND traces = 1) AS kept"
            f" FROM {DECISIONS} GROUP BY k) ORDER BY traces DESC"
        )

    def drops(self) -> list[dict[str, Any]]:
        return self.transport.query_rows(
            "SELECT k AS `key`, st AS status, t AS traces, s AS spans, tokens, cost, r AS reserved FROM ("
            " SELECT `key` AS k, status AS st, sum(traces) AS t, sum(spans) AS s,"
            " sum(input_tokens + output_tokens) AS tokens, sum(cost_usd) AS cost, sum(reserved) AS r"
            f" FROM {SUMMARIES} GROUP BY k, st) ORDER BY traces DESC"
        )

    def newest_start_ns(self) -> int | None:
        newest = self.transport.query_rows(f"SELECT maxOrNull(start_ns) AS t FROM {DECISIONS}")[0]["t"]
        return None if newest is None else int(newest)

    def kept_by_hour(self, since_ns: int) -> list[dict[str, Any]]:
        return self.transport.query_rows(
            f"SELECT intDiv(start_ns, {_HOUR_NS}) * {_HOUR_NS} AS hour_ns, sum(spans) AS kept_spans,"
            " countIf(traces = 1) AS kept_traces"
            f" FROM {DECISIONS} WHERE keep AND start_ns >= {{since:Int64}} GROUP BY hour_ns ORDER BY hour_ns",
            {"since": since_ns},
        )

    def early_decisions(self) -> dict[str, int]:
        rows = self.transport.query_rows(
            f"SELECT early, count() AS n FROM {DECISIONS} WHERE early != '' GROUP BY early"
        )
        return {str(r["early"]): int(r["n"]) for r in rows}

    def decisions_of(self, trace_prefix: str) -> list[dict[str, Any]]:
        return self.transport.query_rows(
            f"SELECT {_DECISION_COLUMNS} FROM {DECISIONS} WHERE startsWith(trace_id, {{prefix:String}})"
            " ORDER BY `pass`, traces DESC",
            {"prefix": trace_prefix},
        )


class ClickHouseRetentionReads:
    """RetentionReads: the cursor from the sampler's state repository (a connection per question, closed
    after it), the verdicts from sample_decisions."""

    def __init__(self, transport: ClickHouseTransport, open_state: Callable[[], SamplingStateRepository]) -> None:
        self.transport = transport
        self._open_state = open_state

    def decided_through(self, writer_id: str) -> int:
        state = self._open_state()
        try:
            return state.decided_through(writer_id)
        finally:
            state.close()

    def verdicts(self, trace_ids: pa.Array) -> pa.Table | None:
        """The verdicts of the decided ones of `trace_ids` (bound as one array parameter: ask for a
        segment's traces, not a whole record's); None before the sampler's first decision."""
        if not self.transport.query_rows(f"SELECT 1 AS one FROM {DECISIONS} LIMIT 1"):
            return None
        ids = [t for t in trace_ids.to_pylist() if t is not None]
        table = self.transport.query_arrow(
            "SELECT trace_id, keep, reserve, weight AS rate,"
            " coalesce(reason, if(reserve, 'replay reserve', 'dropped')) AS reason"
            f" FROM ({TRACE_WEIGHTS_SQL}) WHERE trace_id IN {{ids:Array(String)}} ORDER BY trace_id",
            {"ids": ids},
        )
        return _as_verdicts(table)


_VERDICT_SCHEMA = pa.schema(
    [
        ("trace_id", pa.string()),
        ("keep", pa.bool_()),
        ("reserve", pa.bool_()),
        ("rate", pa.float64()),
        ("reason", pa.string()),
    ]
)


def _as_verdicts(table: pa.Table) -> pa.Table:
    """The answer in the embedded verdicts' types (ClickHouse's may come dictionary-encoded or as large strings)."""
    columns = []
    for field in _VERDICT_SCHEMA:
        column = table.column(field.name)
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        columns.append(column.cast(field.type))
    return pa.Table.from_arrays(columns, schema=_VERDICT_SCHEMA)


def clickhouse_sampling_stores(
    transport: ClickHouseTransport,
    open_state: Callable[[], SamplingStateRepository],
    take_lock: Callable[[], SamplerLock | None],
    quiet_s: float = 60.0,
) -> SamplingStores:
    """Tail sampling's stores on the record in ClickHouse, with the sampler's state and lock from the
    control plane (PostgreSQL on a scale-out deployment). `quiet_s`: how long the record must have had
    no new batch before `airlock sample gc` takes it for stopped (ClickHouseRecordCollector)."""
    from airlock.store.clickhouse.sampling_gc import ClickHouseRecordCollector

    return SamplingStores(
        feed=ClickHouseSamplerFeed(transport),
        sink=ClickHouseDecisionSink(transport),
        report=ClickHouseSampleReport(transport),
        retention=ClickHouseRetentionReads(transport, open_state),
        collector=ClickHouseRecordCollector(transport, quiet_s=quiet_s),
        open_state=open_state,
        take_lock=take_lock,
    )
