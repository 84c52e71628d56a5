"""The read side: DuckDB over the live Parquet segments. Readers never block writers: they open
finished, renamed files only, and a query that races a compaction is retried once on a fresh list."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb

from airlock.errors import StoreUnavailable
from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.store.drift import DRIFT_DIMENSIONS, TOKEN_SIDES, TokenRatio
from airlock.store.embedded.blobs import INDEX_SCHEMA, BlobCorrupt, read_blob, valid_prefix
from airlock.store.embedded.failures import store_errors
from airlock.store.embedded.layout import DataDir
from airlock.store.embedded.segments import live_segments
from airlock.store.interface import BlobLocator, TraceFilter

SPAN_COLUMNS = frozenset(SPAN_SCHEMA.names)

# Friendly names for the columns people filter by most.
ALIASES = {
    "tenant": "airlock.tenant",
    "model": "gen_ai.request.model",
    "served_model": "gen_ai.response.model",
    "upstream": "airlock.upstream",
    "session": "airlock.session",
    "task": "airlock.task",
    "route": "airlock.route",
}


# The drift dimensions (airlock.store.drift) as expressions over a span.
DRIFT_KEYS = {
    # The name Airlock sent upstream: what the pre-flight check looks margins up by (a provider may
    # answer with a dated snapshot name instead).
    "model": 'coalesce("airlock.upstream.model", "gen_ai.response.model", "gen_ai.request.model")',
    "script": "coalesce(\"airlock.script\", 'none')",
    "upstream": '"airlock.upstream"',
    "tokenizer": '"airlock.local.tokenizer"',
    "tenant": '"airlock.tenant"',
}
assert set(DRIFT_KEYS) == set(DRIFT_DIMENSIONS)


def q(name: str) -> str:
    """A quoted identifier (column names hold dots)."""
    return '"' + name.replace('"', '""') + '"'


class DuckDBSpanReader:
    """SpanReader and DriftReader over the live segments, through DuckDB views spans, hops and blob_index."""

    def __init__(self, data: DataDir) -> None:
        self.data = data

    def _connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(":memory:")
        views = (
            ("spans", self.data.spans, SPAN_SCHEMA),
            ("hops", self.data.hops, HOP_SCHEMA),
            ("blob_index", self.data.blob_index, INDEX_SCHEMA),
        )
        for view, folder, schema in views:
            files = [str(s.path) for s in live_segments(folder)]
            if files:
                listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
                con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet([{listing}], union_by_name=true)")
            else:
                con.register(f"{view}_empty", schema.empty_table())
                con.execute(f"CREATE VIEW {view} AS SELECT * FROM {view}_empty")
        return con

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A connection with the views spans, hops and blob_index over the live segments (caller closes)."""
        return self._connect()

    def sql(self, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows of a DuckDB query over the views (a query racing a compaction is retried once). Not part
        of any store protocol: for this backend's own modules and its tests."""
        for attempt in range(2):
            con = self._connect()
            try:
                cur = con.execute(query, list(params))
                cols = [d[0] for d in cur.description or []]
                return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
            except duckdb.IOException:
                if attempt:  # a segment vanished under us twice: something else is wrong
                    raise
            finally:
                con.close()
        raise AssertionError("unreachable")

    def _where(self, flt: TraceFilter) -> tuple[str, list[Any]]:
        clauses: list[str] = ["TRUE"]
        params: list[Any] = []
        if flt.since_ns is not None:
            clauses.append("start_ns >= ?")
            params.append(flt.since_ns)
        if flt.until_ns is not None:
            clauses.append("start_ns < ?")
            params.append(flt.until_ns)
        for col, value in (
            ("airlock.tenant", flt.tenant),
            ("gen_ai.request.model", flt.model),
            ("status", flt.status),
            ("trace_id", flt.trace_id),
        ):
            if value is not None:
                clauses.append(f"{q(col)} = ?")
                params.append(value)
        if flt.originals_only:
            clauses.append('"airlock.replay.run" IS NULL')
        for key, value in flt.attributes.items():
            col = ALIASES.get(key, key)
            if col in SPAN_COLUMNS:
                clauses.append(f"CAST({q(col)} AS VARCHAR) = ?")
            else:
                clauses.append("attributes[?] = ?")
                params.append(key)
            params.append(value)
        return " AND ".join(clauses), params

    def traces(self, flt: TraceFilter) -> list[dict[str, Any]]:
        """One row per trace with at least one span matching the filter. With a tenant in the filter a
        trace is that tenant's spans only: spans another tenant (or an unauthenticated request) recorded
        under the same trace id never change its counts, times or tokens. Without one, `tenant` names
        every tenant with spans in the trace, comma-separated."""
        where, params = self._where(flt)
        scope = ""
        if flt.tenant is not None:
            scope = 'WHERE s."airlock.tenant" = ?'
            params.append(flt.tenant)
        query = f"""
            WITH hit AS (SELECT DISTINCT trace_id FROM spans WHERE {where})
            SELECT s.trace_id,
                   min(s.start_ns) AS start_ns,
                   max(s.end_ns) AS end_ns,
                   count(*) AS spans,
                   string_agg(DISTINCT s."airlock.tenant", ',' ORDER BY s."airlock.tenant") AS tenant,
                   any_value(s."airlock.task") AS task,
                   string_agg(DISTINCT s."gen_ai.request.model", ',') AS models,
                   sum(CASE WHEN s.status = 'error' THEN 1 ELSE 0 END) AS errors,
                   sum(CASE WHEN s.status = 'cancelled' THEN 1 ELSE 0 END) AS cancelled,
                   sum(coalesce(s."gen_ai.usage.input_tokens", 0)) AS input_tokens,
                   sum(coalesce(s."gen_ai.usage.output_tokens", 0)) AS output_tokens,
                   sum(greatest(coalesce(s."airlock.attempts", 1) - 1, 0)) AS failovers
            FROM spans s JOIN hit USING (trace_id) {scope}
            GROUP BY s.trace_id
            ORDER BY start_ns DESC
            LIMIT {int(flt.limit)}
        """
        return self.sql(query, params)

    def spans_of_trace(self, trace_id: str, tenant: str | None = None) -> list[dict[str, Any]]:
        """The trace's spans by start; with a tenant, that tenant's spans only."""
        if tenant is None:
            return self.sql("SELECT * FROM spans WHERE trace_id = ? ORDER BY start_ns, span_id", [trace_id])
        return self.sql(
            'SELECT * FROM spans WHERE trace_id = ? AND "airlock.tenant" = ? ORDER BY start_ns, span_id',
            [trace_id, tenant],
        )

    def hops_of_trace(self, trace_id: str, tenant: str | None = None) -> list[dict[str, Any]]:
        """The trace's hops; with a tenant, the hops of that tenant's spans only."""
        if tenant is None:
            return self.sql("SELECT * FROM hops WHERE trace_id = ? ORDER BY span_id, attempt", [trace_id])
        return self.sql(
            "SELECT * FROM hops WHERE trace_id = ? AND span_id IN"
            ' (SELECT span_id FROM spans WHERE trace_id = ? AND "airlock.tenant" = ?) ORDER BY span_id, attempt',
            [trace_id, trace_id, tenant],
        )

    def find_trace(self, id_or_prefix: str, tenant: str | None = None) -> str | None:
        """A trace id from a trace id, a span/request id, or a unique prefix of either; with a tenant,
        among that tenant's spans only."""
        scope = ' AND "airlock.tenant" = ?' if tenant is not None else ""
        rows = self.sql(
            "SELECT DISTINCT trace_id FROM spans WHERE (trace_id LIKE ? || '%' OR span_id LIKE ? || '%'"
            f" OR request_id = ?){scope} LIMIT 2",
            [id_or_prefix, id_or_prefix, id_or_prefix, *([tenant] if tenant is not None else [])],
        )
        return rows[0]["trace_id"] if len(rows) == 1 else None

    def token_ratios(self, by: Sequence[str], since_ns: int | None, side: str) -> list[TokenRatio]:
        unknown = [d for d in by if d not in DRIFT_KEYS]
        if unknown or side not in TOKEN_SIDES:
            raise ValueError(f"no drift by {unknown} of {side} tokens")
        provider = f'"gen_ai.usage.{side}_tokens"'
        local = f'"airlock.local.{side}_tokens"'
        keys = "".join(f"{DRIFT_KEYS[d]} AS k{i}, " for i, d in enumerate(by))
        where = f"{provider} IS NOT NULL AND {local} > 0 AND status = 'ok'"
        params: list[Any] = []
        if since_ns is not None:
            where += " AND start_ns >= ?"
            params.append(since_ns)
        query = (
            f"SELECT {keys}start_ns, CAST({provider} AS DOUBLE) / {local} - 1 AS ratio FROM spans WHERE {where}"
            " ORDER BY start_ns"
        )
        with store_errors("token drift"):
            rows = self.sql(query, params)
        width = range(len(by))
        return [TokenRatio(tuple(str(r[f"k{i}"]) for i in width), int(r["start_ns"]), float(r["ratio"])) for r in rows]


class BlobReader:
    """Payloads by digest, located through the blob index segments."""

    def __init__(self, data: DataDir) -> None:
        self.data = data
        self.reader = DuckDBSpanReader(data)

    def locate(self, digests: list[str]) -> dict[str, tuple[Any, ...]]:
        if not digests:
            return {}
        rows = self.reader.sql(
            "SELECT digest, pack, frame_offset, frame_length, inner_offset, length FROM blob_index"
            " WHERE digest IN (SELECT unnest(?))",
            [digests],
        )
        return {r["digest"]: tuple(r.values()) for r in rows}

    def get_many(self, digests: list[str]) -> dict[str, bytes | BlobCorrupt]:
        """Each digest found, with its verified bytes or the corruption found; missing ones are absent."""
        out: dict[str, bytes | BlobCorrupt] = {}
        for digest, location in self.locate(digests).items():
            try:
                out[digest] = read_blob(self.data.blobs, digest, location)
            except BlobCorrupt as e:
                out[digest] = e
        return out

    def get(self, digest: str) -> bytes:
        found = self.get_many([digest]).get(digest)
        if found is None:
            raise KeyError(digest)
        if isinstance(found, BlobCorrupt):
            raise found
        return found

    def resolve(self, prefix: str) -> str:
        """The full digest for a unique prefix of at least 8 hex characters."""
        prefix = valid_prefix(prefix)
        rows = self.reader.sql("SELECT DISTINCT digest FROM blob_index WHERE starts_with(digest, ?) LIMIT 2", [prefix])
        if len(rows) != 1:
            raise KeyError(f"{len(rows)} blobs match {prefix!r}")
        return str(rows[0]["digest"])


class LocalPacks:
    """Payloads in this node's own packs, located through another store's blob index (a shared
    record's): a node reads the payloads it wrote; another node's stay on that node."""

    def __init__(self, data: DataDir, locator: BlobLocator) -> None:
        self.data = data
        self.locator = locator

    def get_many(self, digests: Sequence[str]) -> dict[str, bytes | BlobCorrupt]:
        out: dict[str, bytes | BlobCorrupt] = {}
        for digest, location in self.locator.locate(list(digests)).items():
            try:
                out[digest] = read_blob(self.data.blobs, digest, location)
            except BlobCorrupt as e:
                out[digest] = e
            except FileNotFoundError:
                continue  # written by another node, whose packs are its own
            except OSError as e:
                raise StoreUnavailable(f"reading payload {digest[:12]}: {e.strerror or e}") from e
        return out

    def get(self, digest: str) -> bytes:
        found = self.get_many([digest]).get(digest)
        if found is None:
            raise KeyError(digest)
        if isinstance(found, BlobCorrupt):
            raise found
        return found

    def resolve(self, prefix: str) -> str:
        return self.locator.resolve(prefix)
