"""`airlock query`: filter spans by time and by any column or attribute, group by any of them, and
measure each group: spans, errors, error rate, latency percentiles, tokens and cost.

Two passes keep a group-by over millions of distinct values fast: the first computes the cheap
measures (counts, sums) for every group and keeps the top `limit` by the sort key; the second computes
latency percentiles for those groups only (an exact percentile needs each group's values sorted, which
for a million groups cost more than the whole first pass). Sorting by a percentile needs them for
every group and takes the slow path."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import duckdb

from airlock.config.schema import Config
from airlock.errors import QueryError
from airlock.query.copies import ensure_copies
from airlock.query.cost import NS_PER_DAY, register_prices
from airlock.query.fields import Fields, q
from airlock.store.embedded import DataDir
from airlock.store.embedded.sampling import trace_weights_sql

_FILTER = re.compile(r"^\s*([^=!<>~\s][^=!<>~]*?)\s*(!=|>=|<=|=|>|<|~)\s*(.*?)\s*$", re.S)
SORTS = ("spans", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms", "input_tokens", "output_tokens", "cost_usd")
MEASURES = ("spans", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms", "input_tokens", "output_tokens", "cost_usd")


@dataclass(frozen=True)
class Filter:
    name: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Filter:
        m = _FILTER.match(text)
        if not m:
            raise QueryError(f"{text!r}: write KEY=VALUE, KEY!=VALUE, KEY>N, KEY<N, KEY>=N, KEY<=N or KEY~REGEX")
        return cls(m.group(1), m.group(2), m.group(3))


@dataclass(frozen=True)
class QuerySpec:
    since_ns: int | None = None
    until_ns: int | None = None
    where: tuple[Filter, ...] = ()
    by: tuple[str, ...] = ()
    sort: str = "spans"
    limit: int = 20


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[dict[str, Any]]
    groups_total: int
    spans_total: int
    copies_built: int = 0
    notes: list[str] = field(default_factory=list)


def filter_sql(spec: QuerySpec, fields: Fields) -> tuple[str, list[Any]]:
    clauses, params = ["TRUE"], []
    if spec.since_ns is not None:
        clauses.append("start_ns >= ?")
        params.append(spec.since_ns)
    if spec.until_ns is not None:
        clauses.append("start_ns < ?")
        params.append(spec.until_ns)
    for f in spec.where:
        expr = fields.expr(f.name)
        if f.value.lower() == "null" and f.op in ("=", "!="):
            clauses.append(f"{expr} IS {'NOT ' if f.op == '!=' else ''}NULL")
            continue
        if f.op == "~":
            try:
                re.compile(f.value)
            except re.error as e:
                raise QueryError(f"{f.name}~{f.value}: not a regular expression: {e}") from None
            clauses.append(f"regexp_matches(CAST({expr} AS VARCHAR), ?)")
            params.append(f.value)
            continue
        numeric = fields.is_numeric(f.name) or f.op in (">", "<", ">=", "<=")
        if numeric:
            try:
                number = float(f.value)
            except ValueError:
                raise QueryError(f"{f.name}{f.op}{f.value}: {f.value!r} is not a number") from None
            clauses.append(f"TRY_CAST({expr} AS DOUBLE) {f.op} ?")
            params.append(number)
        else:
            clauses.append(f"CAST({expr} AS VARCHAR) {'=' if f.op == '=' else '<>'} ?")
            params.append(f.value)
    return " AND ".join(clauses), params


_BUCKET = re.compile(r"^time:(\d+)([smhd])$")
_UNIT_NS = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}


def _key_expr(name: str, fields: Fields) -> str:
    """A group key: a field, or time:<N><s|m|h|d>, the start of the span's time bucket (UTC, in ns)."""
    m = _BUCKET.match(name)
    if m is None:
        if name.startswith("time:"):
            raise QueryError(f"{name!r}: a time bucket is time:<N><s|m|h|d>, e.g. time:1h")
        return fields.expr(name)
    width = int(m.group(1)) * _UNIT_NS[m.group(2)]
    if width <= 0:
        raise QueryError(f"{name!r}: the bucket must be longer than zero")
    return f"(start_ns // {width}) * {width}"


def run_query(data: DataDir, spec: QuerySpec, config: Config | None = None) -> QueryResult:
    """Run the query; once more on a fresh listing if a copy vanished under it (another query removed
    the copy of a segment that a compaction had just merged)."""
    try:
        return _run_query(data, spec, config)
    except duckdb.IOException:
        return _run_query(data, spec, config)


def _run_query(data: DataDir, spec: QuerySpec, config: Config | None) -> QueryResult:
    if spec.sort not in SORTS and spec.sort not in spec.by:
        raise QueryError(f"sort by one of {', '.join(SORTS)}, or by a group key (ascending)")
    if spec.limit <= 0:
        raise QueryError("limit must be positive")
    copies = ensure_copies(data)
    if not copies.paths:
        return QueryResult(["spans"], [], 0, 0, 0, ["no spans recorded yet"])
    columns = copies.columns()
    fields = Fields(columns, "attributes" in columns)
    where, params = filter_sql(spec, fields)
    con = duckdb.connect(":memory:")
    try:
        listing = ", ".join("'" + str(p).replace("'", "''") + "'" for p in copies.paths)
        keys = [f"{_key_expr(name, fields)} AS g{i}" for i, name in enumerate(spec.by)]
        gcols = [f"g{i}" for i in range(len(spec.by))]

        def col(name: str, typ: str) -> str:
            return q(name) if name in columns else f"NULL::{typ}"

        # tail sampling's decisions: how many traces each decided trace stands for, also before the
        # compaction that stamps it into the spans
        weights = trace_weights_sql(data) if "trace_id" in columns else None

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
            f" FROM read_parquet([{listing}], union_by_name=true)"
            + (f" LEFT JOIN ({weights}) tw USING (trace_id)" if weights else "")
            + f" WHERE {where}"
        )
        has_prices = config is not None and any(m.prices for u in config.upstreams for m in u.models)
        price_keys = (
            con.execute(
                f"SELECT DISTINCT up, upm, day FROM ({base}) WHERE up IS NOT NULL AND tin IS NOT NULL", params
            ).fetchall()
            if has_prices
            else []
        )
        priced = register_prices(con, config, [(str(a), str(b), int(c)) for a, b, c in price_keys]) and bool(price_keys)
        cost = (
            "sum(CASE WHEN b.tin IS NOT NULL AND b.tout IS NOT NULL AND p.day IS NOT NULL THEN"
            " ((b.tin - least(coalesce(b.tcached, 0), b.tin)) * p.input"
            " + least(coalesce(b.tcached, 0), b.tin) * p.cached"
            " + (b.tout - least(coalesce(b.treason, 0), b.tout)) * p.output"
            " + least(coalesce(b.treason, 0), b.tout) * p.reasoning + p.per_call) * b.w END)"
            if priced
            else "NULL::DOUBLE"
        )
        join = (
            " LEFT JOIN prices p ON p.upstream = b.up AND p.upstream_model = b.upm AND p.day = b.day" if priced else ""
        )
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
            sql = (
                f"WITH g AS MATERIALIZED ({full}), {totals}"
                f" SELECT g.*, pct[1] AS p50_ms, pct[2] AS p95_ms, pct[3] AS p99_ms, tot.*"
                f" FROM g CROSS JOIN tot ORDER BY {order} LIMIT {int(spec.limit)}"
            )
        else:
            match = " AND ".join(f"b.{g} IS NOT DISTINCT FROM t.{g}" for g in gcols) or "TRUE"
            sql = (
                f"WITH g AS MATERIALIZED ({cheap}), {totals},"
                f" t AS (SELECT * FROM g ORDER BY {order} LIMIT {int(spec.limit)}),"
                f" l AS (SELECT {select_keys} {percentiles} AS pct FROM ({base}) b"
                f"       SEMI JOIN t ON {match} {group})"
                f" SELECT t.*, l.pct[1] AS p50_ms, l.pct[2] AS p95_ms, l.pct[3] AS p99_ms, tot.*"
                f" FROM t CROSS JOIN tot LEFT JOIN l ON "
                + (" AND ".join(f"l.{g} IS NOT DISTINCT FROM t.{g}" for g in gcols) or "TRUE")
                + f" ORDER BY {order}"
            )
        cur = con.execute(sql, _repeat(params, sql, base))
        names = [d[0] for d in cur.description or []]
        raw = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()
    out_columns = [*spec.by, *MEASURES]
    rows = []
    for r in raw:
        row = {name: r[f"g{i}"] for i, name in enumerate(spec.by)}
        row.update({m: r.get(m) for m in MEASURES})
        rows.append(row)
    groups_total = int(raw[0]["groups_total"]) if raw else 0
    spans_total = int(raw[0]["spans_total"]) if raw else 0
    notes = [] if config is not None else ["cost needs the prices in the config: give --config"]
    return QueryResult(out_columns, rows, groups_total, spans_total, copies.built, notes)


def _repeat(params: list[Any], sql: str, base: str) -> list[Any]:
    """The filter's parameters once for each time the filtered scan appears in the statement."""
    return params * sql.count(f"FROM ({base})")
