"""The embedded SpanQuery: DuckDB SQL built from a QuerySpec, run over the query copies
(store.embedded.copies) with tail sampling's weights joined in.

Two passes keep a group-by over millions of distinct values fast: the first computes the cheap
measures (counts, sums) for every group and keeps the top `limit` by the sort key; the second computes
latency percentiles for those groups only (an exact percentile needs each group's values sorted, which
for a million groups cost more than the whole first pass). Sorting by a percentile needs them for
every group and takes the slow path.

Cost is linear in tokens, so it is priced per (upstream, model sent, day) rather than per row: the
distinct keys of the filtered spans are priced through the caller's lookup into a table `prices`, and
the token sums are joined to it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb

from airlock.query.fields import ATTR_PREFIX, attribute_key, is_numeric, span_column
from airlock.query.spec import MEASURES, ORDER_OPS, Filter, bucket_width_ns
from airlock.store.embedded.copies import CopySet, ensure_copies
from airlock.store.embedded.failures import store_errors
from airlock.store.embedded.layout import DataDir
from airlock.store.embedded.sampling import trace_weights_sql
from airlock.store.query import NS_PER_DAY, GroupedSpans, PriceLookup

if TYPE_CHECKING:
    from airlock.query.spec import QuerySpec

T = TypeVar("T")


def q(name: str) -> str:
    """A quoted identifier (column names hold dots)."""
    return '"' + name.replace('"', '""') + '"'


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def parquet_listing(copies: CopySet) -> str:
    return ", ".join(sql_string(str(p)) for p in copies.paths)


class Fields:
    """Field names resolved to SQL over the columns the copies actually have."""

    def __init__(self, columns: set[str]) -> None:
        self.columns = columns
        self.has_map = "attributes" in columns  # some segment had more keys than the copy promotes

    def column_of(self, name: str) -> str | None:
        """The copy column a name means, or None for an attribute no span carries as a column."""
        column = span_column(name)
        if column is not None:
            return column
        column = ATTR_PREFIX + attribute_key(name)
        return column if column in self.columns else None

    def expr(self, name: str) -> str:
        """A SQL expression for the value of `name` on a span (NULL where the span lacks it)."""
        key = attribute_key(name)
        column = self.column_of(name)
        if column is not None and column in self.columns:
            direct = q(column)
            if self.has_map and column.startswith(ATTR_PREFIX):  # some segments kept it in the map only
                return f"coalesce({direct}, attributes[{sql_string(key)}])"
            return direct
        if column is not None:  # a span column no segment has yet
            return "NULL"
        if self.has_map:
            return f"attributes[{sql_string(key)}]"
        return "NULL::VARCHAR"


def filter_sql(
    since_ns: int | None, until_ns: int | None, where: Sequence[Filter], fields: Fields
) -> tuple[str, list[Any]]:
    """A WHERE condition (with its parameters) for the window and the filters."""
    clauses: list[str] = ["TRUE"]
    params: list[Any] = []
    if since_ns is not None:
        clauses.append("start_ns >= ?")
        params.append(since_ns)
    if until_ns is not None:
        clauses.append("start_ns < ?")
        params.append(until_ns)
    for f in where:
        expr = fields.expr(f.name)
        if f.tests_missing:
            clauses.append(f"{expr} IS {'NOT ' if f.op == '!=' else ''}NULL")
        elif f.op == "~":
            clauses.append(f"regexp_matches(CAST({expr} AS VARCHAR), ?)")
            params.append(f.pattern())
        elif is_numeric(f.name) or f.op in ORDER_OPS:
            clauses.append(f"TRY_CAST({expr} AS DOUBLE) {f.op} ?")
            params.append(f.number())
        else:
            clauses.append(f"CAST({expr} AS VARCHAR) {'=' if f.op == '=' else '<>'} ?")
            params.append(f.value)
    return " AND ".join(clauses), params


def _key_expr(name: str, fields: Fields) -> str:
    """A group key: a field, or time:<N><s|m|h|d>, the start of the span's time bucket (UTC, in ns)."""
    width = bucket_width_ns(name)
    return fields.expr(name) if width is None else f"(start_ns // {width}) * {width}"


def _register_prices(con: duckdb.DuckDBPyConnection, prices: PriceLookup, keys: list[tuple[str, str, int]]) -> None:
    """A `prices` table with per-token and per-call USD for each key the lookup prices."""
    con.execute(
        "CREATE TEMP TABLE prices (upstream VARCHAR, upstream_model VARCHAR, day BIGINT, input DOUBLE,"
        " output DOUBLE, cached DOUBLE, reasoning DOUBLE, per_call DOUBLE)"
    )
    rows = []
    for upstream, model, day in keys:
        rates = prices(upstream, model, day)
        if rates is not None:
            rows.append((upstream, model, day, *rates))
    if rows:
        con.executemany("INSERT INTO prices VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


def retried_once(run: Callable[[], T]) -> T:
    """Run once more on a fresh listing if a copy vanished under the first run (another reader removed
    the copy of a segment that a compaction had just merged)."""
    try:
        return run()
    except (duckdb.IOException, FileNotFoundError):
        return run()


class DuckDBSpanQuery:
    """SpanQuery over a data directory's query copies."""

    def __init__(self, data: DataDir) -> None:
        self.data = data

    def grouped(self, spec: QuerySpec, prices: PriceLookup | None = None) -> GroupedSpans:
        with store_errors("query"):
            return retried_once(lambda: self._grouped(spec, prices))

    def _grouped(self, spec: QuerySpec, prices: PriceLookup | None) -> GroupedSpans:
        copies = ensure_copies(self.data)
        if not copies.paths:
            return GroupedSpans([], 0, 0, 0, recorded=False)
        columns = copies.columns()
        fields = Fields(columns)
        where, params = filter_sql(spec.since_ns, spec.until_ns, spec.where, fields)
        keys = [f"{_key_expr(name, fields)} AS g{i}" for i, name in enumerate(spec.by)]
        gcols = [f"g{i}" for i in range(len(spec.by))]

        def col(name: str, typ: str) -> str:
            return q(name) if name in columns else f"NULL::{typ}"

        # tail sampling's decisions: how many traces each decided trace stands for, also before the
        # compaction that stamps it into the spans
        weights = trace_weights_sql(self.data) if "trace_id" in columns else None

        # the filtered scan, inlined where it is used (a view cannot hold the filter's parameters)
        base = (
            f"SELECT {', '.join([*keys, ''])} status, duration_ms,"
            f" {col('gen_ai.usage.input_tokens', 'BIGINT')} AS tin,"
            f" {col('gen_ai.usage.output_tokens', 'BIGINT')} AS tout,"
            f" {col('gen_ai.usage.cache_read.input_tokens', 'BIGINT')} AS tcached,"
            f" {col('airlock.usage.reasoning_tokens', 'BIGINT')} AS treason,"
            f" {col('airlock.upstream', 'VARCHAR')} AS up, {col('airlock.upstream.model', 'VARCHAR')} AS upm,"
            f" start_ns // {NS_PER_DAY} AS day,"
            # tail sampling: a kept span stands for 1/p (its adjusted count), one kept only as replay
            # reserve for none; a span the sampler has not pruned stands for itself
            f" coalesce({'tw.weight, ' if weights else ''}{col('airlock.sample.rate', 'DOUBLE')}, 1.0) AS w"
            f" FROM read_parquet([{parquet_listing(copies)}], union_by_name=true)"
            + (f" LEFT JOIN ({weights}) tw USING (trace_id)" if weights else "")
            + f" WHERE {where}"
        )
        con = duckdb.connect(":memory:")
        try:
            price_keys = (
                con.execute(
                    f"SELECT DISTINCT up, upm, day FROM ({base}) WHERE up IS NOT NULL AND tin IS NOT NULL", params
                ).fetchall()
                if prices is not None
                else []
            )
            priced = prices is not None and bool(price_keys)
            if prices is not None:
                _register_prices(con, prices, [(str(a), str(b), int(c)) for a, b, c in price_keys])
            sql = _grouped_sql(spec, base, gcols, priced)
            cur = con.execute(sql, params * sql.count(f"FROM ({base})"))  # the filter's once per scan
            names = [d[0] for d in cur.description or []]
            raw = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        finally:
            con.close()
        rows = []
        for r in raw:
            row = {name: r[f"g{i}"] for i, name in enumerate(spec.by)}
            row.update({m: r.get(m) for m in MEASURES})
            rows.append(row)
        groups_total = int(raw[0]["groups_total"]) if raw else 0
        spans_total = int(raw[0]["spans_total"]) if raw else 0
        return GroupedSpans(rows, groups_total, spans_total, copies.built)


def _grouped_sql(spec: QuerySpec, base: str, gcols: list[str], priced: bool) -> str:
    cost = (
        "sum(CASE WHEN b.tin IS NOT NULL AND b.tout IS NOT NULL AND p.day IS NOT NULL THEN"
        " ((b.tin - least(coalesce(b.tcached, 0), b.tin)) * p.input"
        " + least(coalesce(b.tcached, 0), b.tin) * p.cached"
        " + (b.tout - least(coalesce(b.treason, 0), b.tout)) * p.output"
        " + least(coalesce(b.treason, 0), b.tout) * p.reasoning + p.per_call) * b.w END)"
        if priced
        else "NULL::DOUBLE"
    )
    join = " LEFT JOIN prices p ON p.upstream = b.up AND p.upstream_model = b.upm AND p.day = b.day" if priced else ""
    select_keys = ", ".join([*(f"b.{g}" for g in gcols), ""])
    group = f"GROUP BY {', '.join(f'b.{g}' for g in gcols)}" if gcols else ""
    cheap = (
        f"SELECT {select_keys} round(sum(b.w))::BIGINT AS spans,"
        f" round(sum(CASE WHEN b.status = 'error' THEN b.w ELSE 0 END))::BIGINT AS errors,"
        f" sum(CASE WHEN b.status = 'error' THEN b.w ELSE 0 END) / nullif(sum(b.w), 0) AS error_rate,"
        f" round(sum(b.tin * b.w))::BIGINT AS input_tokens, round(sum(b.tout * b.w))::BIGINT AS output_tokens,"
        f" {cost} AS cost_usd"
        f" FROM ({base}) b{join} {group}"
    )
    # latency percentiles are of the spans kept (not weighted), leaving out the replay reserve
    percentiles = "quantile_cont(b.duration_ms, [0.5, 0.95, 0.99]) FILTER (WHERE b.w > 0)"
    if spec.sort in spec.by:  # by a group key, ascending: time buckets in order
        first = f"g{spec.by.index(spec.sort)}"
        order = f"{first} NULLS LAST" + "".join(f", {g} NULLS LAST" for g in gcols if g != first)
    else:
        order = f"{q(spec.sort)} DESC NULLS LAST" + "".join(f", {g} NULLS LAST" for g in gcols)
    # the totals come from the same materialised groups (a window over a million groups cost more)
    totals = "tot AS (SELECT count(*) AS groups_total, sum(spans) AS spans_total FROM g)"
    if spec.sort.startswith("p9") or spec.sort == "p50_ms":
        full = cheap.replace(" AS spans,", f" AS spans, {percentiles} AS pct,", 1)
        return (
            f"WITH g AS MATERIALIZED ({full}), {totals}"
            f" SELECT g.*, pct[1] AS p50_ms, pct[2] AS p95_ms, pct[3] AS p99_ms, tot.*"
            f" FROM g CROSS JOIN tot ORDER BY {order} LIMIT {int(spec.limit)}"
        )
    match = " AND ".join(f"b.{g} IS NOT DISTINCT FROM t.{g}" for g in gcols) or "TRUE"
    return (
        f"WITH g AS MATERIALIZED ({cheap}), {totals},"
        f" t AS (SELECT * FROM g ORDER BY {order} LIMIT {int(spec.limit)}),"
        f" l AS (SELECT {select_keys} {percentiles} AS pct FROM ({base}) b"
        f"       SEMI JOIN t ON {match} {group})"
        f" SELECT t.*, l.pct[1] AS p50_ms, l.pct[2] AS p95_ms, l.pct[3] AS p99_ms, tot.*"
        f" FROM t CROSS JOIN tot LEFT JOIN l ON "
        + (" AND ".join(f"l.{g} IS NOT DISTINCT FROM t.{g}" for g in gcols) or "TRUE")
        + f" ORDER BY {order}"
    )
