"""Replay's selection on ClickHouse: which recorded traces and calls to replay, read from the spans
table; their payloads come from the PayloadReader the backend is given (S3's, or the embedded packs').
S3's reader finds a payload's frame through a BlobLocator: ClickHouseBlobLocator is the one over the
blob_index table. Replay runs are control-plane state (ReplayRunRepository), not the record's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from airlock.errors import BlobCorrupt
from airlock.record.schema import SPAN_SCHEMA
from airlock.store.clickhouse.query import Binds
from airlock.store.clickhouse.spans import trace_filter_sql
from airlock.store.clickhouse.transport import ClickHouseTransport, Params, quoted, rows_of
from airlock.store.embedded.blobs import valid_prefix
from airlock.store.interface import PayloadReader, TraceFilter
from airlock.store.replay import RecordedPair, TraceSelection


def as_span_table(table: pa.Table) -> pa.Table:
    """Spans read from ClickHouse in the span schema's columns and types. ClickHouse has no NULL array
    or map: an empty list is read as None, as the recorder writes it (it never writes an empty list),
    and an empty map as {}, as the recorder writes a span's attributes (always a dict, often empty)."""
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


_INDEX_COLUMNS = ("digest", "pack", "frame_offset", "frame_length", "inner_offset", "length")


class ClickHouseBlobLocator:
    """BlobLocator over the blob_index table: where each payload lies in the packs."""

    def __init__(self, transport: ClickHouseTransport) -> None:
        self.transport = transport

    def locate(self, digests: list[str]) -> dict[str, tuple[Any, ...]]:
        """An index row (digest, pack, frame_offset, frame_length, inner_offset, length) per digest the
        index holds (the first by pack and offset, where it holds several); others are absent."""
        if not digests:
            return {}
        rows = self.transport.query_rows(
            f"SELECT {', '.join(_INDEX_COLUMNS)} FROM blob_index WHERE digest IN {{digests:Array(String)}}"
            " ORDER BY digest, pack, frame_offset LIMIT 1 BY digest",
            {"digests": list(dict.fromkeys(digests))},
        )
        return {str(r["digest"]): tuple(r[c] for c in _INDEX_COLUMNS) for r in rows}

    def resolve(self, prefix: str) -> str:
        """The full digest for a unique prefix of at least 8 hex characters; KeyError when none or
        several match."""
        prefix = valid_prefix(prefix)
        rows = self.transport.query_rows(
            "SELECT DISTINCT digest FROM blob_index WHERE startsWith(digest, {prefix:String}) LIMIT 2",
            {"prefix": prefix},
        )
        if len(rows) != 1:
            raise KeyError(f"{len(rows)} blobs match {prefix!r}")
        return str(rows[0]["digest"])


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
        binds = Binds()
        where, params = trace_filter_sql(replace(flt, originals_only=True), binds), binds.params
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
