"""SpanReader on ClickHouse: the traces list, a trace's spans and hops, and finding a trace by id or
prefix, with the embedded reader's answers (store/embedded/query.py DuckDBSpanReader), tenant scoping
included.

ClickHouse keeps no null arrays or maps: an empty one reads back as None, as the recorder writes an
absent one, and the rows leave out the backend's own writer_id and seq columns."""

from __future__ import annotations

from typing import Any

from airlock.query.fields import ALIASES, SPAN_COLUMNS
from airlock.store.clickhouse.query import Binds
from airlock.store.clickhouse.schema import HOPS, SPANS
from airlock.store.clickhouse.transport import ClickHouseTransport, quoted
from airlock.store.interface import TraceFilter

_NOT_RECORDED = "EXCEPT (writer_id, seq)"


def _as_recorded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Empty maps and arrays as None, as the embedded store reads an absent one."""
    for row in rows:
        for key, value in row.items():
            if isinstance(value, (dict, list)) and not value:
                row[key] = None
    return rows


def trace_filter_sql(flt: TraceFilter, binds: Binds) -> str:
    clauses = ["1"]
    if flt.since_ns is not None:
        clauses.append(f"start_ns >= {binds(flt.since_ns, 'Int64')}")
    if flt.until_ns is not None:
        clauses.append(f"start_ns < {binds(flt.until_ns, 'Int64')}")
    for col, value in (
        ("airlock.tenant", flt.tenant),
        ("gen_ai.request.model", flt.model),
        ("status", flt.status),
        ("trace_id", flt.trace_id),
    ):
        if value is not None:
            clauses.append(f"{quoted(col)} = {binds(value, 'String')}")
    if flt.originals_only:
        clauses.append("`airlock.replay.run` IS NULL")
    for key, value in flt.attributes.items():
        col = ALIASES.get(key, key)
        if col in SPAN_COLUMNS:
            clauses.append(f"toString({quoted(col)}) = {binds(value, 'String')}")
        else:
            k = binds(key, "String")
            clauses.append(f"mapContains(attributes, {k}) AND attributes[{k}] = {binds(value, 'String')}")
    return " AND ".join(f"({c})" for c in clauses)


def _distinct_list(expr: str) -> str:
    """string_agg(DISTINCT x, ',' ORDER BY x): NULL when every value is NULL."""
    return f"if(count({expr}) = 0, NULL, arrayStringConcat(arraySort(groupUniqArray({expr})), ','))"


class ClickHouseSpanReader:
    """SpanReader (store/interface.py) over the spans and hops tables."""

    def __init__(self, transport: ClickHouseTransport) -> None:
        self.transport = transport

    def traces(self, flt: TraceFilter) -> list[dict[str, Any]]:
        """One row per trace with at least one span matching the filter, newest first. With a tenant in
        the filter a trace is that tenant's spans only; without one, `tenant` names every tenant with
        spans in the trace, comma-separated. `models` lists the models asked for, sorted."""
        binds = Binds()
        where = trace_filter_sql(flt, binds)
        scope = ""
        if flt.tenant is not None:
            scope = f"AND `airlock.tenant` = {binds(flt.tenant, 'String')}"
        sql = f"""
            SELECT trace_id,
                   min(start_ns) AS start_ns,
                   max(end_ns) AS end_ns,
                   count() AS spans,
                   {_distinct_list("`airlock.tenant`")} AS tenant,
                   any(`airlock.task`) AS task,
                   {_distinct_list("`gen_ai.request.model`")} AS models,
                   countIf(status = 'error') AS errors,
                   countIf(status = 'cancelled') AS cancelled,
                   sum(coalesce(`gen_ai.usage.input_tokens`, 0)) AS input_tokens,
                   sum(coalesce(`gen_ai.usage.output_tokens`, 0)) AS output_tokens,
                   sum(greatest(coalesce(`airlock.attempts`, 1) - 1, 0)) AS failovers
            FROM {SPANS}
            WHERE trace_id IN (SELECT trace_id FROM {SPANS} WHERE {where}) {scope}
            GROUP BY trace_id
            ORDER BY start_ns DESC, trace_id
            LIMIT {int(flt.limit)}
        """
        return self.transport.query_rows(sql, binds.params)

    def spans_of_trace(self, trace_id: str, tenant: str | None = None) -> list[dict[str, Any]]:
        """The trace's spans by start; with a tenant, that tenant's spans only."""
        scope = " AND `airlock.tenant` = {tenant:String}" if tenant is not None else ""
        rows = self.transport.query_rows(
            f"SELECT * {_NOT_RECORDED} FROM {SPANS} WHERE trace_id = {{trace:String}}{scope}"
            " ORDER BY start_ns, span_id",
            {"trace": trace_id, **({"tenant": tenant} if tenant is not None else {})},
        )
        return _as_recorded(rows)

    def hops_of_trace(self, trace_id: str, tenant: str | None = None) -> list[dict[str, Any]]:
        """The trace's hops by span and attempt; with a tenant, the hops of that tenant's spans only."""
        scope = ""
        if tenant is not None:
            scope = (
                f" AND span_id IN (SELECT span_id FROM {SPANS} WHERE trace_id = {{trace:String}}"
                " AND `airlock.tenant` = {tenant:String})"
            )
        rows = self.transport.query_rows(
            f"SELECT * {_NOT_RECORDED} FROM {HOPS} WHERE trace_id = {{trace:String}}{scope} ORDER BY span_id, attempt",
            {"trace": trace_id, **({"tenant": tenant} if tenant is not None else {})},
        )
        return _as_recorded(rows)

    def find_trace(self, id_or_prefix: str, tenant: str | None = None) -> str | None:
        """A trace id from a trace id, a span/request id, or a unique prefix of either; with a tenant,
        among that tenant's spans only. None when nothing or more than one trace matches."""
        scope = " AND `airlock.tenant` = {tenant:String}" if tenant is not None else ""
        rows = self.transport.query_rows(
            f"SELECT DISTINCT trace_id FROM {SPANS} WHERE (startsWith(trace_id, {{p:String}})"
            f" OR startsWith(span_id, {{p:String}}) OR request_id = {{p:String}}){scope} LIMIT 2",
            {"p": id_or_prefix, **({"tenant": tenant} if tenant is not None else {})},
        )
        return str(rows[0]["trace_id"]) if len(rows) == 1 else None
