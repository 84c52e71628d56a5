"""SpanQuery on ClickHouse: the embedded query (store/embedded/query_engine.py) in ClickHouse's SQL, over
the `spans` table, with the same answers.

Where the dialects differ, this side is made to answer as DuckDB does: a free attribute is read from the
`attributes` Map only where the key is there (ClickHouse answers '' for a missing key; DuckDB NULL);
quantile_cont is quantilesExactInclusive (both interpolate linearly); round() of a weighted count
rounds half away from zero (ClickHouse rounds floats half to even); a group with no latency kept has
NULL percentiles. Every value travels as a {name:Type} parameter (`Binds`); prices too, as arrays.

One pass computes every measure of every group (ClickHouse's aggregation is fast enough that the
embedded two-pass plan buys nothing here) and a window gives the totals before the limit.

Tail sampling's weights are the sampler's decisions (sample_decisions), joined by trace as the embedded
query joins its decision files, so totals stay unbiased before anything is pruned; else the adjusted count
stamped in `airlock.sample.rate`; a span with neither stands for itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airlock.errors import QueryError
from airlock.query.fields import NUMERIC_COLUMNS, attribute_key, is_numeric, span_column
from airlock.query.spec import MEASURES, ORDER_OPS, Filter, bucket_width_ns
from airlock.store.clickhouse.sampling import trace_weights_subquery
from airlock.store.clickhouse.schema import SPANS
from airlock.store.clickhouse.transport import ClickHouseTransport, quoted
from airlock.store.query import NS_PER_DAY, GroupedSpans, PriceLookup

if TYPE_CHECKING:
    from airlock.query.spec import QuerySpec


class Binds:
    """Parameters of one statement: each value gets a fresh name and is written as {name:Type}."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    def __call__(self, value: Any, typ: str) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return "{" + name + ":" + typ + "}"


def field_expr(name: str, binds: Binds) -> str:
    """The value of a field on a span: a span column (through its alias), or a free attribute from the
    map, NULL where the span lacks the key."""
    column = span_column(name)
    if column is not None:
        return quoted(column)
    key = binds(attribute_key(name), "String")
    return f"if(mapContains(attributes, {key}), attributes[{key}], NULL)"


def _as_number(name: str, expr: str) -> str:
    column = span_column(name)
    if column is not None and column in NUMERIC_COLUMNS:
        return f"toFloat64({expr})"
    return f"toFloat64OrNull(toString({expr}))"


def filter_sql(since_ns: int | None, until_ns: int | None, where: Sequence[Filter], binds: Binds) -> str:
    """A WHERE condition for the window and the filters, as `airlock query` reads them."""
    clauses = ["1"]
    if since_ns is not None:
        clauses.append(f"start_ns >= {binds(since_ns, 'Int64')}")
    if until_ns is not None:
        clauses.append(f"start_ns < {binds(until_ns, 'Int64')}")
    for f in where:
        expr = field_expr(f.name, binds)
        if f.tests_missing:
            clauses.append(f"{expr} IS {'NOT ' if f.op == '!=' else ''}NULL")
        elif f.op == "~":
            clauses.append(f"match(toString({expr}), {binds(f.pattern(), 'String')})")
        elif is_numeric(f.name) or f.op in ORDER_OPS:
            clauses.append(f"{_as_number(f.name, expr)} {f.op} {binds(f.number(), 'Float64')}")
        else:
            clauses.append(f"toString({expr}) {'=' if f.op == '=' else '!='} {binds(f.value, 'String')}")
    return " AND ".join(f"({c})" for c in clauses)


def key_expr(name: str, binds: Binds) -> str:
    """A group key: a field, or time:<N><unit>, the start of the span's time bucket (UTC, ns)."""
    width = bucket_width_ns(name)
    return field_expr(name, binds) if width is None else f"intDiv(start_ns, {int(width)}) * {int(width)}"


def half_up(expr: str) -> str:
    """round() as DuckDB does it for the non-negative weighted sums here: half away from zero."""
    return f"toInt64(floor({expr} + 0.5))"


def is_recorded(transport: ClickHouseTransport) -> bool:
    return bool(transport.query_rows(f"SELECT 1 AS one FROM {SPANS} LIMIT 1"))


class ClickHouseSpanQuery:
    """SpanQuery (store/query.py) over the spans table."""

    def __init__(self, transport: ClickHouseTransport) -> None:
        self.transport = transport

    def grouped(self, spec: QuerySpec, prices: PriceLookup | None = None) -> GroupedSpans:
        if not is_recorded(self.transport):
            return GroupedSpans([], 0, 0, 0, recorded=False)
        binds = Binds()
        where = filter_sql(spec.since_ns, spec.until_ns, spec.where, binds)
        keys = [f"{key_expr(name, binds)} AS g{i}" for i, name in enumerate(spec.by)]
        gcols = [f"g{i}" for i in range(len(spec.by))]
        base = (
            f"SELECT {', '.join([*keys, ''])}status, duration_ms,"
            " `gen_ai.usage.input_tokens` AS tin, `gen_ai.usage.output_tokens` AS tout,"
            " `gen_ai.usage.cache_read.input_tokens` AS tcached, `airlock.usage.reasoning_tokens` AS treason,"
            " `airlock.upstream` AS up, `airlock.upstream.model` AS upm,"
            f" intDiv(start_ns, {NS_PER_DAY}) AS day,"
            " coalesce(tw.sample_weight, `airlock.sample.rate`, 1.0) AS w"
            f" FROM {SPANS} LEFT JOIN {trace_weights_subquery()} AS tw USING (trace_id) WHERE {where}"
        )
        cost, scan = "CAST(NULL AS Nullable(Float64))", base
        priced = self._priced(base, binds, prices) if prices is not None else None
        if priced is not None:
            scan, cost = priced
        group = f"GROUP BY {', '.join(gcols)}" if gcols else ""
        w_err = "if(status = 'error', w, 0)"
        kept = "w > 0 AND duration_ms IS NOT NULL"
        grouped = (
            f"SELECT {', '.join([*gcols, ''])}{half_up('sum(w)')} AS spans,"
            f" {half_up(f'sum({w_err})')} AS errors,"
            f" sum({w_err}) / nullIf(sum(w), 0) AS error_rate,"
            f" {half_up('sum(tin * w)')} AS input_tokens, {half_up('sum(tout * w)')} AS output_tokens,"
            f" {cost} AS cost_usd,"
            f" quantilesExactInclusiveIf(0.5, 0.95, 0.99)(assumeNotNull(duration_ms), {kept}) AS pct,"
            f" countIf({kept}) AS timed"
            f" FROM ({scan}) {group}"
        )
        if spec.sort in spec.by:  # by a group key, ascending: time buckets in order
            first = f"g{spec.by.index(spec.sort)}"
            order = f"{first} ASC NULLS LAST" + "".join(f", {g} ASC NULLS LAST" for g in gcols if g != first)
        else:
            if spec.sort not in MEASURES:
                raise QueryError(f"cannot sort by {spec.sort!r}")
            order = f"{quoted(spec.sort)} DESC NULLS LAST" + "".join(f", {g} ASC NULLS LAST" for g in gcols)
        sql = (
            f"SELECT *, if(timed > 0, pct[1], NULL) AS p50_ms, if(timed > 0, pct[2], NULL) AS p95_ms,"
            f" if(timed > 0, pct[3], NULL) AS p99_ms,"
            f" count() OVER () AS groups_total, sum(spans) OVER () AS spans_total"
            f" FROM ({grouped}) ORDER BY {order} LIMIT {int(spec.limit)}"
        )
        raw = self.transport.query_rows(sql, binds.params)
        rows = []
        for r in raw:
            row = {name: r[f"g{i}"] for i, name in enumerate(spec.by)}
            row.update({m: r.get(m) for m in MEASURES})
            rows.append(row)
        groups_total = int(raw[0]["groups_total"]) if raw else 0
        spans_total = int(raw[0]["spans_total"] or 0) if raw else 0
        return GroupedSpans(rows, groups_total, spans_total, 0)

    def _priced(self, base: str, binds: Binds, prices: PriceLookup) -> tuple[str, str] | None:
        """Each (upstream, upstream model, day) of the filtered spans priced through the lookup, the rates
        bound as parallel arrays: the scan with `pi`, the position of the span's key (0: unpriced), and
        the sum of the priced cost. None when nothing is priced."""
        found = self.transport.query_rows(
            f"SELECT DISTINCT up, upm, day FROM ({base}) WHERE up IS NOT NULL AND tin IS NOT NULL", binds.params
        )
        keys: list[tuple[str, str, int]] = []
        rates: list[tuple[float, ...]] = []
        for r in found:
            if r["upm"] is None:  # the embedded join never matches a NULL model: never priced
                continue
            rate = prices(str(r["up"]), str(r["upm"]), int(r["day"]))
            if rate is not None:
                keys.append((str(r["up"]), str(r["upm"]), int(r["day"])))
                rates.append(tuple(float(x) for x in rate))
        if not keys:
            return None
        ups = binds([k[0] for k in keys], "Array(String)")
        models = binds([k[1] for k in keys], "Array(String)")
        days = binds([k[2] for k in keys], "Array(Int64)")
        rin, rout, rcached, rreason, rcall = (binds([r[i] for r in rates], "Array(Float64)") for i in range(5))
        scan = (
            "SELECT *, if(up IS NULL OR upm IS NULL, 0, arrayFirstIndex((u, m, d) -> u = assumeNotNull(up)"
            f" AND m = assumeNotNull(upm) AND d = day, {ups}, {models}, {days})) AS pi FROM ({base})"
        )
        cached = "least(coalesce(tcached, 0), tin)"
        reason = "least(coalesce(treason, 0), tout)"
        row_cost = (
            f"((tin - {cached}) * {rin}[pi] + {cached} * {rcached}[pi] + (tout - {reason}) * {rout}[pi]"
            f" + {reason} * {rreason}[pi] + {rcall}[pi]) * w"
        )
        return scan, f"sumOrNull(if(tin IS NOT NULL AND tout IS NOT NULL AND pi > 0, {row_cost}, NULL))"
