"""Replay's selection on ClickHouse: which recorded traces and calls to replay, read from the spans
table; their payloads come from the PayloadReader the backend is given (S3's, or the embedded packs').
Replay runs are control-plane state (ReplayRunRepository), not the record's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from airlock.errors import BlobCorrupt
from airlock.record.schema import SPAN_SCHEMA
from airlock.store.clickhouse.transport import ClickHouseTransport, Params, quoted, rows_of
from airlock.store.interface import PayloadReader, TraceFilter
from airlock.store.replay import RecordedPair, TraceSelection

SPAN_COLUMNS = frozenset(SPAN_SCHEMA.names)
# Friendly names for the columns people filter by most (as the embedded reader's ALIASES).
ALIASES = {
    "tenant": "airlock.tenant",
    "model": "gen_ai.request.model",
    "served_model": "gen_ai.response.model",
    "upstream": "airlock.upstream",
    "session": "airlock.session",
    "task": "airlock.task",
    "route": "airlock.route",
}


def trace_conditions(flt: TraceFilter) -> tuple[str, dict[str, Any]]:
    """The filter's conditions on a span, as a WHERE clause over the spans table and its parameters."""
    clauses = ["1"]
    params: dict[str, Any] = {}
    if flt.since_ns is not None:
        clauses.append("start_ns >= {since:Int64}")
        params["since"] = flt.since_ns
    if flt.until_ns is not None:
        clauses.append("start_ns < {until:Int64}")
        params["until"] = flt.until_ns
    for i, (col, value) in enumerate(
        (
            ("airlock.tenant", flt.tenant),
            ("gen_ai.request.model", flt.model),
            ("status", flt.status),
            ("trace_id", flt.trace_id),
        )
    ):
        if value is not None:
            clauses.append(f"{quoted(col)} = {{f{i}:String}}")
            params[f"f{i}"] = value
    if flt.originals_only:
        clauses.append("`airlock.replay.run` IS NULL")
    for i, (key, value) in enumerate(flt.attributes.items()):
        col = ALIASES.get(key, key)
        params[f"v{i}"] = value
        if col in SPAN_COLUMNS:
            clauses.append(f"toString({quoted(col)}) = {{v{i}:String}}")
        else:
            key_param = f"{{k{i}:String}}"
            clauses.append(f"mapContains(attributes, {key_param}) AND attributes[{key_param}] = {{v{i}:String}}")
            params[f"k{i}"] = key
    return " AND ".join(clauses), params


def as_span_table(table: pa.Table) -> pa.Table:
    """Spans read from ClickHouse in the span schema's columns and types. ClickHouse has no NULL array:
    an empty list reads back as NULL, as the recorder writes it (it never writes an empty list)."""
    spans = table.select(SPAN_SCHEMA.names).cast(SPAN_SCHEMA)
    for i, field in enumerate(SPAN_SCHEMA):
        if pa.types.is_list(field.type):
            column = spans.column(i)
            empty = pc.equal(pc.list_value_length(column), 0)
            spans = spans.set_column(i, field, pc.if_else(empty, pa.scalar(None, field.type), column))
    return spans


def span_rows(transport: ClickHouseTransport, where: str, params: Params) -> list[dict[str, Any]]:
    """Full span rows (the span schema's columns, maps as dicts) matching `where`, by start then span id."""
    columns = ", ".join(quoted(n) for n in SPAN_SCHEMA.names)
    table = transport.query_arrow(f"SELECT {columns} FROM spans WHERE {where} ORDER BY start_ns, span_id", params)
    return rows_of(as_span_table(table))


class ReaderPayloads:
    """Payloads of a set of digests, read through a PayloadReader (which locates them by the blob index)."""

    def __init__(self, reader: PayloadReader, digests: Sequence[str]) -> None:
        self._reader = reader
        self._digests = frozenset(digests)

    def get_many(self, digests: Sequence[str]) -> dict[str, bytes | BlobCorrupt]:
        wanted = [d for d in dict.fromkeys(digests) if d in self._digests]
        if not wanted:
            return {}
        found = self._reader.get_many(wanted)
        return {d: v for d, v in found.items() if isinstance(v, (bytes, BlobCorrupt))}


class ClickHouseReplaySelection:
    """ReplaySelection over the spans table, with payloads from `payloads`."""

    def __init__(self, transport: ClickHouseTransport, payloads: PayloadReader) -> None:
        self.transport = transport
        self._payloads = payloads

    def traces(self, flt: TraceFilter, limit: int | None) -> TraceSelection:
        where, params = trace_conditions(replace(flt, originals_only=True))
        hit = f"SELECT DISTINCT trace_id FROM spans WHERE {where}"
        if limit is not None and limit <= 0:  # LIMIT 0 returns no row to carry the count
            rows = self.transport.query_rows(f"SELECT count() AS matched FROM ({hit})", params)
            return TraceSelection([], int(rows[0]["matched"]) if rows else 0, limit)
        cap = "" if limit is None else f"LIMIT {int(limit)}"
        rows = self.transport.query_rows(
            f"""
            WITH started AS (SELECT trace_id, min(start_ns) AS start_ns FROM spans
                             WHERE trace_id IN ({hit}) GROUP BY trace_id)
            SELECT trace_id, count() OVER () AS matched FROM started
            ORDER BY start_ns DESC, trace_id {cap}""",
            params,
        )
        ids = [str(r["trace_id"]) for r in rows]
        matched = int(rows[0]["matched"]) if rows else 0
        return TraceSelection(ids, matched, limit)

    def model_calls(self, trace_ids: Sequence[str], kinds: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        calls: dict[str, list[dict[str, Any]]] = {t: [] for t in trace_ids}
        if not trace_ids or not kinds:
            return calls
        rows = span_rows(
            self.transport,
            "trace_id IN {traces:Array(String)} AND kind IN {kinds:Array(String)}",
            {"traces": list(trace_ids), "kinds": list(kinds)},
        )
        for row in rows:
            calls[row["trace_id"]].append(row)
        return calls

    def recorded_pairs(self, run: str) -> list[RecordedPair]:
        rows = self.transport.query_rows(
            "SELECT r.duration_ms AS replay_ms, o.duration_ms AS original_ms,"
            " r.`airlock.payload.upstream_request` AS r_req, o.`airlock.payload.upstream_request` AS o_req"
            " FROM spans r JOIN spans o ON r.`airlock.replay.of` = o.span_id"
            " WHERE r.`airlock.replay.run` = {run:String} AND o.`airlock.replay.run` IS NULL"
            " AND r.kind = 'model.chat' AND r.attributes['replay_role'] <> 'judge'"
            " ORDER BY r.start_ns, r.span_id",
            {"run": run},
        )
        return [RecordedPair(r["replay_ms"], r["original_ms"], r["r_req"], r["o_req"]) for r in rows]

    def payloads(self, digests: Sequence[str]) -> ReaderPayloads:
        return ReaderPayloads(self._payloads, digests)
