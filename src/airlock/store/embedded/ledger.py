"""The ledger's storage in the embedded store: posted items in SQLite, the bill computed by DuckDB over
the Parquet segments (and the sampler's decisions), in one in-memory connection per bill."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from airlock.errors import ItemConflict, StoreUnavailable
from airlock.store.embedded.failures import sqlite_failure
from airlock.store.embedded.layout import DataDir
from airlock.store.embedded.query import DuckDBSpanReader
from airlock.store.embedded.sampling import create_trace_weights_view
from airlock.store.embedded.state import SQLiteState
from airlock.store.ledger import (
    BILL_DIMENSIONS,
    ITEM_COLUMNS,
    LINE_COLUMNS,
    WASTE_REASONS,
    BillQuery,
    GroupTotals,
    LedgerItemRecord,
    RecordOwners,
    RevenueRule,
    item_of_row,
    item_row,
)

ROW_BYTES = 512  # what a span row and its hops take in the segments beside its payloads (an estimate)

T = TypeVar("T")


def with_compaction_retry(build: Callable[[], T], doing: str) -> T:
    """Run a read of the segments; one that races a compaction (a segment vanishes under it) is retried
    once on a fresh listing, as every reader of the record does."""
    try:
        return build()
    except duckdb.IOException:
        pass
    try:
        return build()
    except duckdb.Error as e:
        raise StoreUnavailable(f"{doing}: {type(e).__name__}: {e}") from e


class SQLiteLedgerItems:
    """LedgerItemRepository on the data directory's SQLite state (table ledger_items)."""

    def __init__(self, state_db: Path) -> None:
        try:
            self.state = SQLiteState(state_db)
        except sqlite3.Error as e:
            raise sqlite_failure(e, f"opening {state_db}") from e
        self.conn = self.state.conn

    def insert_all(self, items: Sequence[LedgerItemRecord]) -> list[bool]:
        created: list[bool] = []
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for item in items:
                    cur = self.conn.execute(
                        f"INSERT INTO ledger_items ({', '.join(ITEM_COLUMNS)})"
                        f" VALUES ({', '.join('?' * len(ITEM_COLUMNS))}) ON CONFLICT (tenant, item_id) DO NOTHING",
                        item_row(item),
                    )
                    if cur.rowcount == 1:
                        created.append(True)
                        continue
                    known = self.conn.execute(
                        "SELECT request_sha FROM ledger_items WHERE tenant = ? AND item_id = ?",
                        (item.tenant, item.item_id),
                    ).fetchone()
                    if known is None or known[0] != item.request_sha:
                        raise ItemConflict(item.item_id)
                    created.append(False)
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise sqlite_failure(e, "storing ledger items") from e
        return created

    def in_window(self, since_ns: int, until_ns: int) -> list[LedgerItemRecord]:
        try:
            cur = self.conn.execute(
                f"SELECT {', '.join(ITEM_COLUMNS)} FROM ledger_items WHERE occurred_ns >= ? AND occurred_ns < ?",
                (since_ns, until_ns),
            )
            rows = cur.fetchall()
        except sqlite3.Error as e:
            raise sqlite_failure(e, "reading ledger items") from e
        return [item_of_row(r) for r in rows]

    def close(self) -> None:
        self.state.close()


class DuckDBRecordOwners:
    """RecordOwnerReader over the live segments."""

    def __init__(self, data: DataDir) -> None:
        self.reader = DuckDBSpanReader(data)

    def owners(self, trace_ids: Collection[str], tasks: Collection[str]) -> RecordOwners:
        traces: dict[str, set[str | None]] = {}
        by_task: dict[str, set[str | None]] = {}
        if not trace_ids and not tasks:
            return RecordOwners({}, {})
        try:
            rows = self.reader.sql(
                'SELECT DISTINCT trace_id, coalesce("airlock.task", trace_id) AS task, "airlock.tenant" AS tenant'
                ' FROM spans WHERE "airlock.replay.run" IS NULL'
                ' AND (trace_id IN (SELECT unnest($1::VARCHAR[])) OR "airlock.task" IN (SELECT unnest($2::VARCHAR[]))'
                " OR trace_id IN (SELECT unnest($2::VARCHAR[])))",
                [sorted(trace_ids), sorted(tasks)],
            )
        except duckdb.Error as e:
            raise StoreUnavailable(f"reading who owns traces and tasks: {type(e).__name__}: {e}") from e
        wanted_traces, wanted_tasks = set(trace_ids), set(tasks)
        for r in rows:
            if r["trace_id"] in wanted_traces:
                traces.setdefault(r["trace_id"], set()).add(r["tenant"])
            if r["task"] in wanted_tasks:
                by_task.setdefault(r["task"], set()).add(r["tenant"])
        return RecordOwners({k: frozenset(v) for k, v in traces.items()}, {k: frozenset(v) for k, v in by_task.items()})


def data_dir_bytes(root: Path) -> int:
    """Every byte the data directory holds."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue  # a segment compacted away while we walked
    return total


_ITEM_SCHEMA = pa.schema(
    [
        ("tenant", pa.string()),
        ("item_id", pa.string()),
        ("category", pa.string()),
        ("amount_usd", pa.float64()),
        ("occurred_ns", pa.int64()),
        ("trace_id", pa.string()),
        ("task", pa.string()),
        ("feature", pa.string()),
        ("user_id", pa.string()),
        ("vendor", pa.string()),
    ]
)

# A call's model: the one its route (an alias) sends to its upstream, else the model its route names
# when the call addressed a model directly, else the one its upstream serves under the name sent to it
# (spans recorded without a route). Never the entry of the upstream's own model name when that differs.
SPAN_MODEL_JOINS = """
LEFT JOIN route_targets rt ON rt.route = s."airlock.route" AND rt.upstream = s."airlock.upstream"
LEFT JOIN model_names mn ON mn.name = s."airlock.route" AND mn.upstream = s."airlock.upstream"
LEFT JOIN model_keys mk ON mk.upstream = s."airlock.upstream"
     AND mk.key = coalesce(s."airlock.upstream.model", s."gen_ai.request.model")
"""

_SPAN_LINES = (
    """
CREATE TEMP TABLE span_facts AS
SELECT s.span_id, s.trace_id, s.start_ns, s.status, s.kind,
       coalesce(s."airlock.task", s.trace_id) AS task,
       s."airlock.tenant" AS tenant,
       -- a span without a feature (an app's root span sent over OTLP, say) belongs to its task's feature
       coalesce(s.attributes['feature'],
                max(s.attributes['feature']) OVER (PARTITION BY coalesce(s."airlock.task", s.trace_id))) AS feature,
       s."airlock.user" AS "user",
       s."airlock.upstream" AS upstream, s."airlock.route" AS route,
       coalesce(rt.model, mn.name, mk.model) AS model,
       s."gen_ai.usage.input_tokens" IS NOT NULL AND s."airlock.usage.reported" IS TRUE AS reported,
       coalesce(s."gen_ai.usage.input_tokens", s."airlock.local.input_tokens") AS in_tok,
       coalesce(s."gen_ai.usage.output_tokens", s."airlock.local.output_tokens") AS out_tok,
       coalesce(s."airlock.local.input_tokens", s."gen_ai.usage.input_tokens") AS local_in,
       s."gen_ai.usage.cache_read.input_tokens" AS cache_read,
       s."gen_ai.usage.cache_creation.input_tokens" AS cache_write,
       s."airlock.usage.reasoning_tokens" AS reasoning,
       coalesce(s."airlock.payload.request_bytes", 0)
         + coalesce(s."airlock.payload.response_bytes", 0) AS payload_bytes,
       s.attributes AS attributes,
       -- tail sampling: how many traces the span's trace stands for (its adjusted count when kept, 0 when
       -- dropped and kept only for replay), from the sampler's decisions, which also hold for spans not
       -- yet compacted, and a trace not decided stands for itself
       coalesce(tw.weight, s."airlock.sample.rate", 1.0) AS weight
FROM spans s
LEFT JOIN trace_weights tw ON tw.trace_id = s.trace_id"""
    + SPAN_MODEL_JOINS
    + """WHERE s.start_ns >= $since AND s.start_ns < $until AND s."airlock.replay.run" IS NULL;

CREATE TEMP TABLE lines AS
WITH counted AS (  -- an embedding has no output, nor has a call cut before its first token
    SELECT * REPLACE (coalesce(in_tok, 0) AS in_tok, coalesce(out_tok, 0) AS out_tok) FROM span_facts
    WHERE upstream IS NOT NULL AND (in_tok IS NOT NULL OR out_tok IS NOT NULL)
), priced AS (
    SELECT f.*, p.p_in, p.p_out, p.p_cached, p.p_cwrite, p.p_reason, p.p_fee,
           CASE WHEN p.p_cached IS NULL THEN 0 ELSE least(coalesce(f.cache_read, 0), f.in_tok) END AS c_read
    FROM counted f
    LEFT JOIN prices p ON p.upstream = f.upstream AND p.model = f.model
         AND f.start_ns >= p.from_ns AND f.start_ns < p.to_ns
), parts AS (
    SELECT *,
           CASE WHEN p_cwrite IS NULL THEN 0 ELSE least(coalesce(cache_write, 0), in_tok - c_read) END AS c_write,
           CASE WHEN p_reason IS NULL THEN 0 ELSE least(coalesce(reasoning, 0), out_tok) END AS r_tok
    FROM priced
)
SELECT 'span' AS source,
       CASE WHEN kind = 'model.embedding' THEN 'embeddings' ELSE 'inference' END AS category,
       CASE WHEN p_in IS NULL THEN NULL
            ELSE ((in_tok - c_read - c_write) * p_in + c_read * coalesce(p_cached, 0)
                  + c_write * coalesce(p_cwrite, 0) + (out_tok - r_tok) * p_out + r_tok * coalesce(p_reason, 0))
                 / 1e6 + p_fee END AS usd,
       NOT reported AS estimated,
       CASE status WHEN 'error' THEN 'failed_request' WHEN 'cancelled' THEN 'abandoned_stream' END AS wasted,
       trace_id, task, tenant, feature, "user", model, upstream, start_ns, span_id,
       in_tok, out_tok, weight AS scale, weight AS task_weight
FROM parts;

INSERT INTO lines
SELECT 'hop', 'inference', local_in * p.p_in / 1e6 + p.p_fee, TRUE, 'failed_attempt',
       f.trace_id, f.task, f.tenant, f.feature, f."user", rt.model, h.upstream, h.start_ns, f.span_id,
       local_in, 0, f.weight, f.weight
FROM hops h
JOIN span_facts f ON f.span_id = h.span_id AND f.trace_id = h.trace_id
JOIN route_targets rt ON rt.route = f.route AND rt.upstream = h.upstream
JOIN prices p ON p.upstream = h.upstream AND p.model = rt.model AND h.start_ns >= p.from_ns AND h.start_ns < p.to_ns
WHERE h.outcome IN (SELECT unnest($billed::VARCHAR[])) AND local_in IS NOT NULL;

INSERT INTO lines
SELECT 'attribute', CASE WHEN substr(e.key, 14) IN (SELECT unnest($categories::VARCHAR[])) THEN substr(e.key, 14)
                        ELSE 'other' END,
       TRY_CAST(e.value AS DOUBLE), FALSE, NULL,
       trace_id, task, tenant, feature, "user", model, upstream, start_ns, span_id, NULL, NULL, weight, weight
FROM (SELECT *, unnest(map_entries(attributes)) AS e FROM span_facts WHERE cardinality(attributes) > 0)
WHERE starts_with(e.key, 'airlock.cost.') AND length(e.key) > 13
  -- a client's header is not trusted to be a price: no NaN, no infinity, nothing over $1M a span
  AND isfinite(TRY_CAST(e.value AS DOUBLE)) AND TRY_CAST(e.value AS DOUBLE) BETWEEN 0 AND 1e6;

INSERT INTO lines
SELECT 'storage', 'telemetry_storage', (payload_bytes + $row_bytes) * $usd_per_weight, TRUE, NULL,
       trace_id, task, tenant, feature, "user", model, upstream, start_ns, span_id, NULL, NULL,
       1.0, weight  -- what the data directory holds is paid for as it is: never scaled
FROM span_facts WHERE $usd_per_weight > 0;

CREATE TEMP TABLE tasks AS
SELECT tenant, task, arg_max(status, coalesce(start_ns, 0)) AS last_status, any_value(feature) AS feature,
       max(weight) AS weight
FROM span_facts GROUP BY tenant, task;

CREATE TEMP TABLE trace_tasks AS
SELECT trace_id, tenant, any_value(task) AS task, any_value(feature) AS feature
FROM span_facts GROUP BY trace_id, tenant;

-- A posted item joins a trace or task of its own tenant only: naming another tenant's trace gives it
-- neither that trace's task nor its feature, so it never lands on the other tenant's bill.
INSERT INTO lines
SELECT 'item', i.category, i.amount_usd, FALSE, NULL,
       i.trace_id, coalesce(i.task, t.task, i.trace_id), i.tenant, coalesce(i.feature, t.feature, k.feature),
       i.user_id, NULL, i.vendor, i.occurred_ns, NULL, NULL, NULL,
       -- posted amounts are exact, and the task they belong to counts as often as its trace stands for
       -- (by the sampler's decision, which outlives the spans of a trace it dropped)
       1.0, coalesce(tw.weight, k.weight, 1.0)
FROM items i
LEFT JOIN trace_tasks t ON t.trace_id = i.trace_id AND t.tenant IS NOT DISTINCT FROM i.tenant
LEFT JOIN tasks k ON k.tenant IS NOT DISTINCT FROM i.tenant AND k.task = i.task
LEFT JOIN trace_weights tw ON tw.trace_id = i.trace_id;
"""
)

_ELECTRICITY_LINES = """
INSERT INTO lines
SELECT 'energy', 'electricity', e.joules / 3.6e6 * $usd_per_kwh, e.source <> 'measured',
       CASE f.status WHEN 'error' THEN 'failed_request' WHEN 'cancelled' THEN 'abandoned_stream' END,
       f.trace_id, f.task, f.tenant, f.feature, f."user", f.model, f.upstream, f.start_ns, f.span_id,
       NULL, NULL,
       -- measured joules are what the GPU used, all of it already spread over the calls kept
       CASE WHEN e.source = 'measured' THEN 1.0 ELSE f.weight END, f.weight
FROM span_energy e JOIN span_facts f USING (span_id)
JOIN upstream_deployments d ON d.upstream = f.upstream
WHERE e.joules IS NOT NULL AND d.deployment IN (SELECT unnest($deployments::VARCHAR[]))"""

_DIMENSION_SQL = {
    "tenant": "coalesce(l.tenant, '(none)')",
    "feature": "coalesce(l.feature, '(none)')",
    "user": "coalesce(l.\"user\", '(none)')",
    "task": "coalesce(l.task, '(none)')",
    "model": "coalesce(l.model, '(none)')",
    "upstream": "coalesce(l.upstream, '(none)')",
    "category": "l.category",
    "day": "strftime(make_timestamp(l.start_ns // 1000), '%Y-%m-%d')",
}
assert set(_DIMENSION_SQL) == set(BILL_DIMENSIONS)


def _rows(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description or []]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


class DuckDBBill:
    """Bill in one in-memory DuckDB connection: tables lines, tasks and span_facts."""

    def __init__(self, con: duckdb.DuckDBPyConnection, held_bytes: int) -> None:
        self.con = con
        self.held_bytes = held_bytes

    def _query(self, query: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        try:
            return _rows(self.con.execute(query, list(params)) if params is not None else self.con.execute(query))
        except duckdb.Error as e:
            raise StoreUnavailable(f"reading the bill: {type(e).__name__}: {e}") from e

    def lines(self) -> list[dict[str, Any]]:
        cols = ", ".join(f'"{c}"' for c in LINE_COLUMNS)
        return self._query(f"SELECT {cols} FROM lines ORDER BY start_ns, source, span_id")

    def task_lines(self, task: str, tenant: str | None) -> list[dict[str, Any]]:
        return self._query(
            "SELECT source, category, usd, estimated, wasted, start_ns, span_id, model, upstream, tenant, feature,"
            " in_tok, out_tok FROM lines WHERE (task = ? OR trace_id = ?) AND tenant IS NOT DISTINCT FROM ?"
            " ORDER BY start_ns, source",
            [task, task, tenant],
        )

    def task_tenants(self, task: str) -> dict[str | None, bool]:
        rows = self._query(
            "SELECT tenant, bool_or(source <> 'item') AS recorded FROM lines WHERE task = ? OR trace_id = ?"
            " GROUP BY tenant ORDER BY tenant NULLS FIRST",
            [task, task],
        )
        return {r["tenant"]: bool(r["recorded"]) for r in rows}

    def categories(self) -> list[str]:
        return [r["category"] for r in self._query("SELECT DISTINCT category FROM lines ORDER BY 1")]

    def grouped(self, by: Sequence[str], revenue: RevenueRule) -> list[GroupTotals]:
        unknown = [d for d in by if d not in _DIMENSION_SQL]
        if unknown:
            raise ValueError(f"cannot group by {unknown}; choose from {', '.join(BILL_DIMENSIONS)}")
        categories = self.categories()
        keys = [f"{_DIMENSION_SQL[d]} AS k_{d}" for d in by]
        group = [f"k_{d}" for d in by]
        select_keys = "".join(k + ", " for k in keys)
        usd = "l.usd * l.scale"  # a line counts as often as its trace stands for (tail sampling)
        per_category = "".join(f"sum({usd}) FILTER (WHERE l.category = ?) AS c{i}, " for i in range(len(categories)))
        per_waste = "".join(f"sum({usd}) FILTER (WHERE l.wasted = '{w}') AS w_{w}, " for w in WASTE_REASONS)
        self.con.register(
            "revenue_by_feature",
            pa.table(
                {
                    "feature": pa.array(list(revenue.by_feature), pa.string()),
                    "revenue": pa.array(list(revenue.by_feature.values()), pa.float64()),
                }
            ),
        )
        revenue_sql = (
            "sum(CASE WHEN t.last_status = 'ok' THEN coalesce(r.revenue, ?) * lt.weight END)"
            if revenue.priced
            else "NULL::DOUBLE"
        )
        group_by = f"GROUP BY {', '.join(group)}" if group else ""
        join = f"FULL JOIN t USING ({', '.join(group)})" if group else "CROSS JOIN t"
        rows = self._query(
            f"""
            WITH m AS (
                SELECT {select_keys} {per_category} {per_waste}
                       sum({usd}) AS total, sum(CASE WHEN l.estimated THEN {usd} ELSE 0 END) AS est
                FROM lines l WHERE l.usd IS NOT NULL {group_by}
            ), lt AS (
                SELECT {select_keys} l.tenant, l.task, max(l.task_weight) AS weight
                FROM lines l WHERE l.usd IS NOT NULL AND l.task IS NOT NULL
                GROUP BY ALL
            ), t AS (
                SELECT {"".join(g + ", " for g in group)} sum(lt.weight) AS tasks,
                       sum(lt.weight) FILTER (WHERE t.last_status = 'ok') AS ok, {revenue_sql} AS revenue
                FROM lt LEFT JOIN tasks t ON t.tenant IS NOT DISTINCT FROM lt.tenant AND t.task = lt.task
                LEFT JOIN revenue_by_feature r ON r.feature = t.feature
                {group_by}
            )
            SELECT * FROM m {join} ORDER BY total DESC NULLS LAST""",
            [*categories, *([revenue.default] if revenue.priced else [])],
        )
        return [
            GroupTotals(
                key={d: str(r[f"k_{d}"]) for d in by},
                total_usd=r["total"],
                estimated_usd=r["est"],
                by_category={c: float(r[f"c{i}"]) for i, c in enumerate(categories) if r[f"c{i}"] is not None},
                wasted_usd={w: float(r[f"w_{w}"]) for w in WASTE_REASONS if r[f"w_{w}"] is not None},
                tasks=r["tasks"],
                successful_tasks=r["ok"],
                revenue_usd=r["revenue"],
            )
            for r in rows
        ]

    def unpriced(self) -> list[dict[str, Any]]:
        return self._query("""
            SELECT upstream, model, count(*) AS calls, sum(in_tok) AS input_tokens, sum(out_tok) AS output_tokens
            FROM lines WHERE source = 'span' AND usd IS NULL GROUP BY 1, 2 ORDER BY calls DESC""")

    def close(self) -> None:
        self.con.close()


class DuckDBBillReader:
    """BillReader over a data directory's segments."""

    def __init__(self, data: DataDir) -> None:
        self.data = data

    def open_bill(self, query: BillQuery) -> DuckDBBill:
        return with_compaction_retry(lambda: self._open(query), "reading the record for the bill")

    def _usd_per_weight(self, reader: DuckDBSpanReader, query: BillQuery, held_bytes: int) -> float:
        """USD per unit of span weight (payload bytes + ROW_BYTES): what the data directory holds, spread
        over every span it holds, priced for the retention period."""
        row = reader.sql(
            'SELECT count(*) AS n, sum(coalesce("airlock.payload.request_bytes", 0)'
            ' + coalesce("airlock.payload.response_bytes", 0)) AS b FROM spans'
        )[0]
        weight = (row["b"] or 0) + ROW_BYTES * (row["n"] or 0)
        if weight <= 0:
            return 0.0
        usd_held = held_bytes / 2**30 * query.storage_usd_per_gib_month * query.storage_retention_days / 30.0
        return usd_held / weight

    def _open(self, query: BillQuery) -> DuckDBBill:
        reader = DuckDBSpanReader(self.data)
        held = data_dir_bytes(self.data.root) if self.data.root.exists() else 0
        per_weight = self._usd_per_weight(reader, query, held)
        items = pa.Table.from_pylist(
            [{name: getattr(i, name) for name in _ITEM_SCHEMA.names} for i in query.items], schema=_ITEM_SCHEMA
        )
        pricing = query.pricing
        con = reader.connect()
        try:
            for name, table in (
                ("prices", pricing.prices),
                ("model_keys", pricing.model_keys),
                ("route_targets", pricing.route_targets),
                ("model_names", pricing.model_names),
                ("upstream_deployments", pricing.upstream_deployments),
                ("items", items),
            ):
                con.register(name, table)
            create_trace_weights_view(con, self.data)
            params: dict[str, Any] = {
                "since": query.since_ns,
                "until": query.until_ns,
                "billed": list(query.billed_outcomes),
                "row_bytes": ROW_BYTES,
                "usd_per_weight": per_weight,
                "categories": list(query.posted_categories),
            }
            for statement in _SPAN_LINES.split(";"):  # (no semicolon inside a statement, comments included)
                if statement.strip():
                    used = {k: v for k, v in params.items() if f"${k}" in statement}
                    con.execute(statement, used) if used else con.execute(statement)
            electricity = query.electricity
            if electricity is not None:
                con.register("span_energy", electricity.span_joules.select(["span_id", "joules", "source"]))
                con.execute(
                    _ELECTRICITY_LINES,
                    {"usd_per_kwh": electricity.usd_per_kwh, "deployments": list(electricity.deployments)},
                )
        except BaseException:
            con.close()
            raise
        return DuckDBBill(con, held)
