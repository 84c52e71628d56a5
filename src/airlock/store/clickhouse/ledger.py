"""The ledger's record reads on ClickHouse: who owns a trace or task, and the bill of a period.

The bill is the embedded one's SQL (store/embedded/ledger.py) in ClickHouse's dialect. Its inputs that
come from the config (price windows, model names) and the posted items (which the caller read from the
control-plane LedgerItemRepository and hands in with the BillQuery) are loaded into scratch tables; the
span facts, the lines and the tasks are computed once into scratch tables as well, read as often as the
report asks, and dropped when the bill is closed. Scratch tables use the Memory engine and are named
with a random token, so two bills (two gateways, two reports) never share one.

A span's weight under tail sampling is its trace's from the sampler's decisions (sample_decisions), else
its stamp `airlock.sample.rate`, else 1, as the embedded bill joins its decision files. The one difference
from the embedded store is in what ClickHouse holds rather than in the SQL: the storage the bill prices
(held_bytes) is what the record's tables take on ClickHouse's disk plus the payload frames the blob index
points at, not a data directory's files.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from typing import Any

import pyarrow as pa

from airlock.store.clickhouse.sampling import trace_weights_subquery
from airlock.store.clickhouse.transport import ClickHouseTransport, quoted
from airlock.store.ledger import (
    BILL_DIMENSIONS,
    LINE_COLUMNS,
    WASTE_REASONS,
    BillQuery,
    GroupTotals,
    RecordOwners,
    RevenueRule,
)

ROW_BYTES = 512  # what a span row and its hops take beside its payloads (the embedded store's estimate)

# Every query that joins runs with SQL's NULLs for a row the other side lacks (ClickHouse would answer
# 0 or '' otherwise).
JOIN_NULLS = " SETTINGS join_use_nulls = 1"

_ARROW_TYPES = {pa.string(): "String", pa.int64(): "Int64", pa.float64(): "Float64", pa.bool_(): "Bool"}


def attribute(key: str, table: str = "s") -> str:
    """A free attribute of a span row as SQL: NULL where the span has no such key (ClickHouse's map
    lookup answers '' there). `key` is one of this backend's constant names, never a caller's value."""
    literal = "'" + key.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return f"if(mapContains({table}.attributes, {literal}), {table}.attributes[{literal}], NULL)"


class ScratchTables:
    """Memory tables for one computation, named `scratch_<token>_<name>`, dropped together by close().
    Those a process left behind (it died with a bill open) are dropped by the next computation once
    they are a day old: no report holds a bill that long."""

    def __init__(self, transport: ClickHouseTransport) -> None:
        self.transport = transport
        self.prefix = f"scratch_{uuid.uuid4().hex[:16]}"
        self.made: list[str] = []
        stale = transport.query_rows(
            "SELECT name FROM system.tables WHERE database = {db:String} AND startsWith(name, 'scratch_')"
            " AND metadata_modification_time < now() - INTERVAL 1 DAY",
            {"db": transport.database},
        )
        for row in stale:
            transport.command(f"DROP TABLE IF EXISTS {quoted(str(row['name']))}")

    def name(self, table: str) -> str:
        return f"{self.prefix}_{table}"

    def create(self, table: str, columns: Sequence[tuple[str, str]]) -> str:
        """An empty table of (column, ClickHouse type); returns its name."""
        name = self.name(table)
        cols = ", ".join(f"{quoted(c)} {typ}" for c, typ in columns)
        self.made.append(name)
        self.transport.command(f"CREATE TABLE {name} ({cols}) ENGINE = Memory")
        return name

    def load(self, table: str, data: pa.Table) -> str:
        """A table holding `data` (string, int64, float64 and bool columns, each nullable); returns its name."""
        name = self.create(table, [(f.name, f"Nullable({_ARROW_TYPES[f.type]})") for f in data.schema])
        self.transport.insert_arrow(name, data)
        return name

    def close(self) -> None:
        made, self.made = self.made, []
        for name in made:
            self.transport.command(f"DROP TABLE IF EXISTS {name}")


def model_joins(tables: dict[str, str]) -> str:
    """A call's model, as the embedded SPAN_MODEL_JOINS resolve it: the route's target on its upstream,
    else the model its route names directly, else the model its upstream serves under the name sent."""
    return f"""
LEFT JOIN {tables["route_targets"]} rt ON rt.route = s.`airlock.route` AND rt.upstream = s.`airlock.upstream`
LEFT JOIN {tables["model_names"]} mn ON mn.name = s.`airlock.route` AND mn.upstream = s.`airlock.upstream`
LEFT JOIN {tables["model_keys"]} mk ON mk.upstream = s.`airlock.upstream`
     AND mk.key = coalesce(s.`airlock.upstream.model`, s.`gen_ai.request.model`)
"""


# A span's weight: how many traces its trace stands for under tail sampling (the sampler's decision, which
# also holds for spans not yet pruned; else its stamp), from the decisions joined onto spans `s` as `tw`.
SPAN_WEIGHT = "coalesce(tw.sample_weight, s.`airlock.sample.rate`, 1.0)"
WEIGHTS_JOIN = f"LEFT JOIN {trace_weights_subquery()} tw ON tw.trace_id = s.trace_id"


class ClickHouseRecordOwners:
    """RecordOwnerReader over the spans table."""

    def __init__(self, transport: ClickHouseTransport) -> None:
        self.transport = transport

    def owners(self, trace_ids: Collection[str], tasks: Collection[str]) -> RecordOwners:
        if not trace_ids and not tasks:
            return RecordOwners({}, {})
        rows = self.transport.query_rows(
            "SELECT DISTINCT trace_id, coalesce(`airlock.task`, trace_id) AS task, `airlock.tenant` AS tenant"
            " FROM spans WHERE `airlock.replay.run` IS NULL"
            " AND (trace_id IN {traces:Array(String)} OR `airlock.task` IN {tasks:Array(String)}"
            " OR trace_id IN {tasks:Array(String)})",
            {"traces": sorted(trace_ids), "tasks": sorted(tasks)},
        )
        wanted_traces, wanted_tasks = set(trace_ids), set(tasks)
        traces: dict[str, set[str | None]] = {}
        by_task: dict[str, set[str | None]] = {}
        for r in rows:
            if r["trace_id"] in wanted_traces:
                traces.setdefault(r["trace_id"], set()).add(r["tenant"])
            if r["task"] in wanted_tasks:
                by_task.setdefault(r["task"], set()).add(r["tenant"])
        return RecordOwners({k: frozenset(v) for k, v in traces.items()}, {k: frozenset(v) for k, v in by_task.items()})


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
_ENERGY_SCHEMA = pa.schema([("span_id", pa.string()), ("joules", pa.float64()), ("source", pa.string())])

_LINE_TYPES = {
    "source": "String",
    "category": "String",
    "usd": "Nullable(Float64)",
    "estimated": "Bool",
    "wasted": "Nullable(String)",
    "trace_id": "Nullable(String)",
    "task": "Nullable(String)",
    "tenant": "Nullable(String)",
    "feature": "Nullable(String)",
    "user": "Nullable(String)",
    "model": "Nullable(String)",
    "upstream": "Nullable(String)",
    "start_ns": "Nullable(Int64)",
    "span_id": "Nullable(String)",
    "in_tok": "Nullable(Int64)",
    "out_tok": "Nullable(Int64)",
    "scale": "Float64",
    "task_weight": "Float64",
}
assert tuple(_LINE_TYPES) == LINE_COLUMNS
_INSERT_LINE = "INSERT INTO {lines} (" + ", ".join(quoted(c) for c in LINE_COLUMNS) + ")\n"

_SPAN_FACTS = """
CREATE TABLE {facts} ENGINE = Memory AS
SELECT s.span_id AS span_id, s.trace_id AS trace_id, s.start_ns AS start_ns, s.status AS status, s.kind AS kind,
       coalesce(s.`airlock.task`, s.trace_id) AS task,
       CAST(s.`airlock.tenant` AS Nullable(String)) AS tenant,
       -- a span without a feature (an app's root span sent over OTLP, say) belongs to its task's feature
       coalesce({feature}, max({feature}) OVER (PARTITION BY coalesce(s.`airlock.task`, s.trace_id))) AS feature,
       s.`airlock.user` AS user,
       CAST(s.`airlock.upstream` AS Nullable(String)) AS upstream,
       CAST(s.`airlock.route` AS Nullable(String)) AS route,
       coalesce(rt.model, mn.name, mk.model) AS model,
       s.`gen_ai.usage.input_tokens` IS NOT NULL AND coalesce(s.`airlock.usage.reported`, false) AS reported,
       coalesce(s.`gen_ai.usage.input_tokens`, s.`airlock.local.input_tokens`) AS in_tok,
       coalesce(s.`gen_ai.usage.output_tokens`, s.`airlock.local.output_tokens`) AS out_tok,
       coalesce(s.`airlock.local.input_tokens`, s.`gen_ai.usage.input_tokens`) AS local_in,
       s.`gen_ai.usage.cache_read.input_tokens` AS cache_read,
       s.`gen_ai.usage.cache_creation.input_tokens` AS cache_write,
       s.`airlock.usage.reasoning_tokens` AS reasoning,
       coalesce(s.`airlock.payload.request_bytes`, 0) + coalesce(s.`airlock.payload.response_bytes`, 0)
         AS payload_bytes,
       s.attributes AS attributes,
       {weight} AS weight
FROM spans s
{weights_join}
{model_joins}
WHERE s.start_ns >= {{since:Int64}} AND s.start_ns < {{until:Int64}} AND s.`airlock.replay.run` IS NULL
"""

_CALL_LINES = """
SELECT 'span',
       if(kind = 'model.embedding', 'embeddings', 'inference'),
       if(p_in IS NULL, NULL,
          ((in_tok - c_read - c_write) * p_in + c_read * coalesce(p_cached, 0)
           + c_write * coalesce(p_cwrite, 0) + (out_tok - r_tok) * p_out + r_tok * coalesce(p_reason, 0))
          / 1e6 + p_fee),
       NOT reported,
       multiIf(status = 'error', 'failed_request', status = 'cancelled', 'abandoned_stream', NULL),
       trace_id, task, tenant, feature, user, model, upstream, start_ns, span_id,
       in_tok, out_tok, weight, weight
FROM (
    SELECT *,
           if(p_cwrite IS NULL, 0, least(coalesce(cache_write, 0), in_tok - c_read)) AS c_write,
           if(p_reason IS NULL, 0, least(coalesce(reasoning, 0), out_tok)) AS r_tok
    FROM (
        SELECT f.*, p.p_in AS p_in, p.p_out AS p_out, p.p_cached AS p_cached, p.p_cwrite AS p_cwrite,
               p.p_reason AS p_reason, p.p_fee AS p_fee,
               if(p.p_cached IS NULL, 0, least(coalesce(f.cache_read, 0), f.in_tok)) AS c_read
        -- an embedding has no output, nor has a call cut before its first token
        FROM (SELECT * REPLACE (coalesce(in_tok, 0) AS in_tok, coalesce(out_tok, 0) AS out_tok) FROM {facts}
              WHERE upstream IS NOT NULL AND (in_tok IS NOT NULL OR out_tok IS NOT NULL)) f
        LEFT JOIN {prices} p ON p.upstream = f.upstream AND p.model = f.model
             AND f.start_ns >= p.from_ns AND f.start_ns < p.to_ns
    )
)"""

_HOP_LINES = """
SELECT 'hop', 'inference', f.local_in * p.p_in / 1e6 + p.p_fee, true, 'failed_attempt',
       f.trace_id, f.task, f.tenant, f.feature, f.user, rt.model, h.upstream, h.start_ns, f.span_id,
       f.local_in, 0, f.weight, f.weight
FROM hops h
JOIN {facts} f ON f.span_id = h.span_id AND f.trace_id = h.trace_id
JOIN {route_targets} rt ON rt.route = f.route AND rt.upstream = h.upstream
JOIN {prices} p ON p.upstream = h.upstream AND p.model = rt.model
     AND h.start_ns >= p.from_ns AND h.start_ns < p.to_ns
WHERE h.outcome IN {{billed:Array(String)}} AND f.local_in IS NOT NULL"""

_ATTRIBUTE_LINES = """
SELECT 'attribute', if(substringUTF8(k, 14) IN {{categories:Array(String)}}, substringUTF8(k, 14), 'other'),
       toFloat64OrNull(v), false, NULL,
       trace_id, task, tenant, feature, user, model, upstream, start_ns, span_id, NULL, NULL, weight, weight
FROM {facts} ARRAY JOIN mapKeys(attributes) AS k, mapValues(attributes) AS v
WHERE startsWith(k, 'airlock.cost.') AND lengthUTF8(k) > 13
  -- a client's header is not trusted to be a price: no NaN, no infinity, nothing over $1M a span
  AND isFinite(coalesce(toFloat64OrNull(v), nan)) AND toFloat64OrNull(v) BETWEEN 0 AND 1e6"""

_STORAGE_LINES = """
SELECT 'storage', 'telemetry_storage', (payload_bytes + {{row_bytes:Int64}}) * {{usd_per_weight:Float64}}, true, NULL,
       trace_id, task, tenant, feature, user, model, upstream, start_ns, span_id, NULL, NULL,
       1.0, weight  -- what the record holds is paid for as it is: never scaled
FROM {facts}"""

_TASKS = """
CREATE TABLE {tasks} ENGINE = Memory AS
SELECT tenant, task, argMax(status, coalesce(start_ns, 0)) AS last_status, any(feature) AS feature,
       max(weight) AS weight
FROM {facts} GROUP BY tenant, task"""

_TRACE_TASKS = """
CREATE TABLE {trace_tasks} ENGINE = Memory AS
SELECT trace_id, tenant, any(task) AS task, any(feature) AS feature FROM {facts} GROUP BY trace_id, tenant"""

# A posted item joins a trace or task of its own tenant only: naming another tenant's trace gives it
# neither that trace's task nor its feature, so it never lands on the other tenant's bill.
_ITEM_LINES = """
SELECT 'item', i.category, i.amount_usd, false, NULL,
       i.trace_id, coalesce(i.task, t.task, i.trace_id), i.tenant, coalesce(i.feature, t.feature, k.feature),
       i.user_id, NULL, i.vendor, i.occurred_ns, NULL, NULL, NULL,
       -- posted amounts are exact, and the task they belong to counts as often as its trace stands for
       -- (by the sampler's decision, which outlives the spans of a trace it dropped)
       1.0, coalesce(tw.sample_weight, k.weight, 1.0)
FROM {items} i
LEFT JOIN {trace_tasks} t ON t.trace_id = i.trace_id AND t.tenant IS NOT DISTINCT FROM i.tenant
LEFT JOIN {tasks} k ON k.tenant IS NOT DISTINCT FROM i.tenant AND k.task = i.task
LEFT JOIN {weights} tw ON tw.trace_id = i.trace_id"""

_ELECTRICITY_LINES = """
SELECT 'energy', 'electricity', e.joules / 3.6e6 * {{usd_per_kwh:Float64}}, e.source <> 'measured',
       multiIf(f.status = 'error', 'failed_request', f.status = 'cancelled', 'abandoned_stream', NULL),
       f.trace_id, f.task, f.tenant, f.feature, f.user, f.model, f.upstream, f.start_ns, f.span_id,
       NULL, NULL,
       -- measured joules are what the GPU used, all of it already spread over the calls kept
       if(e.source = 'measured', 1.0, f.weight), f.weight
FROM {span_energy} e JOIN {facts} f ON f.span_id = e.span_id
JOIN {upstream_deployments} d ON d.upstream = f.upstream
WHERE e.joules IS NOT NULL AND d.deployment IN {{deployments:Array(String)}}"""

_DIMENSION_SQL = {
    "tenant": "coalesce(l.tenant, '(none)')",
    "feature": "coalesce(l.feature, '(none)')",
    "user": "coalesce(l.user, '(none)')",
    "task": "coalesce(l.task, '(none)')",
    "model": "coalesce(l.model, '(none)')",
    "upstream": "coalesce(l.upstream, '(none)')",
    "category": "l.category",
    "day": "formatDateTime(toDateTime(intDiv(l.start_ns, 1000000000), 'UTC'), '%Y-%m-%d')",
}
assert set(_DIMENSION_SQL) == set(BILL_DIMENSIONS)


class ClickHouseBill:
    """Bill in scratch tables: lines, tasks and span facts (dropped by close)."""

    def __init__(self, transport: ClickHouseTransport, scratch: ScratchTables, held_bytes: int) -> None:
        self.transport = transport
        self.scratch = scratch
        self.held_bytes = held_bytes
        self.lines_table = scratch.name("lines")
        self.tasks_table = scratch.name("tasks")

    def lines(self) -> list[dict[str, Any]]:
        cols = ", ".join(quoted(c) for c in LINE_COLUMNS)
        return self.transport.query_rows(f"SELECT {cols} FROM {self.lines_table} ORDER BY start_ns, source, span_id")

    def task_lines(self, task: str, tenant: str | None) -> list[dict[str, Any]]:
        return self.transport.query_rows(
            "SELECT source, category, usd, estimated, wasted, start_ns, span_id, model, upstream, tenant, feature,"
            f" in_tok, out_tok FROM {self.lines_table} WHERE (task = {{task:String}} OR trace_id = {{task:String}})"
            " AND tenant IS NOT DISTINCT FROM {tenant:Nullable(String)} ORDER BY start_ns, source",
            {"task": task, "tenant": tenant},
        )

    def task_tenants(self, task: str) -> dict[str | None, bool]:
        rows = self.transport.query_rows(
            f"SELECT tenant, max(source <> 'item') AS recorded FROM {self.lines_table}"
            " WHERE task = {task:String} OR trace_id = {task:String} GROUP BY tenant ORDER BY tenant NULLS FIRST",
            {"task": task},
        )
        return {r["tenant"]: bool(r["recorded"]) for r in rows}

    def categories(self) -> list[str]:
        rows = self.transport.query_rows(f"SELECT DISTINCT category FROM {self.lines_table} ORDER BY category")
        return [str(r["category"]) for r in rows]

    def grouped(self, by: Sequence[str], revenue: RevenueRule) -> list[GroupTotals]:
        unknown = [d for d in by if d not in _DIMENSION_SQL]
        if unknown:
            raise ValueError(f"cannot group by {unknown}; choose from {', '.join(BILL_DIMENSIONS)}")
        categories = self.categories()
        params: dict[str, Any] = {f"c{i}": c for i, c in enumerate(categories)}
        keys = "".join(f"{_DIMENSION_SQL[d]} AS k_{d}, " for d in by)
        group = [f"k_{d}" for d in by]
        usd = "l.usd * l.scale"  # a line counts as often as its trace stands for (tail sampling)
        per_category = "".join(
            f"sumOrNullIf({usd}, l.category = {{c{i}:String}}) AS c{i}, " for i in range(len(categories))
        )
        per_waste = "".join(f"sumOrNullIf({usd}, l.wasted = '{w}') AS w_{w}, " for w in WASTE_REASONS)
        if revenue.priced:
            revenue_sql = (
                "sumOrNull(if(k.last_status = 'ok', coalesce(r.revenue, {default:Float64}) * lt.weight, NULL))"
            )
            params |= {
                "default": revenue.default,
                "features": list(revenue.by_feature),
                "revenues": [float(v) for v in revenue.by_feature.values()],
            }
        else:
            revenue_sql = "CAST(NULL, 'Nullable(Float64)')"
            params |= {"features": [], "revenues": []}
        group_by = f"GROUP BY {', '.join(group)}" if group else ""
        join = f"FULL JOIN t USING ({', '.join(group)})" if group else "CROSS JOIN t"
        rows = self.transport.query_rows(
            f"""
            WITH m AS (
                SELECT {keys} {per_category} {per_waste}
                       sumOrNull({usd}) AS total, sumOrNull(if(l.estimated, {usd}, 0)) AS est
                FROM {self.lines_table} l WHERE l.usd IS NOT NULL {group_by}
            ), lt AS (
                SELECT {keys} l.tenant AS tenant, l.task AS task, max(l.task_weight) AS weight
                FROM {self.lines_table} l WHERE l.usd IS NOT NULL AND l.task IS NOT NULL
                GROUP BY ALL
            ), revenue_by_feature AS (
                SELECT pair.1 AS feature, pair.2 AS revenue
                FROM (SELECT arrayJoin(arrayZip({{features:Array(String)}}, {{revenues:Array(Float64)}})) AS pair)
            ), t AS (
                SELECT {"".join(g + ", " for g in group)} sumOrNull(lt.weight) AS tasks,
                       sumOrNullIf(lt.weight, k.last_status = 'ok') AS ok, {revenue_sql} AS revenue
                FROM lt LEFT JOIN {self.tasks_table} k ON k.tenant IS NOT DISTINCT FROM lt.tenant AND k.task = lt.task
                LEFT JOIN revenue_by_feature r ON r.feature = k.feature
                {group_by}
            )
            SELECT * FROM m {join} ORDER BY total DESC NULLS LAST{JOIN_NULLS}""",
            params,
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
        return self.transport.query_rows(
            "SELECT upstream, model, count() AS calls, sum(in_tok) AS input_tokens, sum(out_tok) AS output_tokens"
            f" FROM {self.lines_table} WHERE source = 'span' AND usd IS NULL GROUP BY upstream, model"
            " ORDER BY calls DESC"
        )

    def close(self) -> None:
        self.scratch.close()


def record_bytes(transport: ClickHouseTransport) -> int:
    """What the record takes: its tables' active parts on ClickHouse's disk, and the payload frames the
    blob index locates (each frame once)."""
    tables = transport.query_rows(
        "SELECT sum(bytes_on_disk) AS b FROM system.parts WHERE active AND database = {db:String}"
        " AND table IN ('spans', 'hops', 'blob_index')",
        {"db": transport.database},
    )
    frames = transport.query_rows(
        "SELECT sum(frame_length) AS b FROM (SELECT DISTINCT pack, frame_offset, frame_length FROM blob_index)"
    )
    return int(tables[0]["b"] or 0) + int(frames[0]["b"] or 0)


class ClickHouseBillReader:
    """BillReader over the record on ClickHouse."""

    def __init__(self, transport: ClickHouseTransport) -> None:
        self.transport = transport

    def _usd_per_weight(self, query: BillQuery, held_bytes: int) -> float:
        """USD per unit of span weight (payload bytes + ROW_BYTES): what the record holds, spread over
        every span it holds, priced for the retention period."""
        row = self.transport.query_rows(
            "SELECT count() AS n, sum(coalesce(`airlock.payload.request_bytes`, 0)"
            " + coalesce(`airlock.payload.response_bytes`, 0)) AS b FROM spans"
        )[0]
        weight = int(row["b"] or 0) + ROW_BYTES * int(row["n"] or 0)
        if weight <= 0:
            return 0.0
        usd_held = held_bytes / 2**30 * query.storage_usd_per_gib_month * query.storage_retention_days / 30.0
        return usd_held / weight

    def open_bill(self, query: BillQuery) -> ClickHouseBill:
        scratch = ScratchTables(self.transport)
        try:
            return self._open(query, scratch)
        except BaseException:
            scratch.close()
            raise

    def _open(self, query: BillQuery, scratch: ScratchTables) -> ClickHouseBill:
        held = record_bytes(self.transport)
        per_weight = self._usd_per_weight(query, held)
        pricing = query.pricing
        items = pa.Table.from_pylist(
            [{name: getattr(i, name) for name in _ITEM_SCHEMA.names} for i in query.items], schema=_ITEM_SCHEMA
        )
        tables = {
            name: scratch.load(name, table)
            for name, table in (
                ("prices", pricing.prices),
                ("model_keys", pricing.model_keys),
                ("route_targets", pricing.route_targets),
                ("model_names", pricing.model_names),
                ("upstream_deployments", pricing.upstream_deployments),
                ("items", items),
            )
        }
        tables |= {name: scratch.name(name) for name in ("facts", "tasks", "trace_tasks")}
        tables["lines"] = scratch.create("lines", list(_LINE_TYPES.items()))
        run = self.transport.command
        scratch.made.append(tables["facts"])
        run(
            _SPAN_FACTS.format(
                facts=tables["facts"],
                feature=attribute("feature"),
                weight=SPAN_WEIGHT,
                weights_join=WEIGHTS_JOIN,
                model_joins=model_joins(tables),
            )
            + JOIN_NULLS,
            {"since": query.since_ns, "until": query.until_ns},
        )
        insert = _INSERT_LINE.format(lines=tables["lines"])
        run(insert + _CALL_LINES.format(**tables) + JOIN_NULLS)
        run(insert + _HOP_LINES.format(**tables) + JOIN_NULLS, {"billed": list(query.billed_outcomes)})
        run(insert + _ATTRIBUTE_LINES.format(**tables), {"categories": list(query.posted_categories)})
        if per_weight > 0:
            run(insert + _STORAGE_LINES.format(**tables), {"row_bytes": ROW_BYTES, "usd_per_weight": per_weight})
        scratch.made.extend([tables["tasks"], tables["trace_tasks"]])
        run(_TASKS.format(**tables))
        run(_TRACE_TASKS.format(**tables))
        run(insert + _ITEM_LINES.format(**tables, weights=trace_weights_subquery()) + JOIN_NULLS)
        electricity = query.electricity
        if electricity is not None:
            energy = electricity.span_joules.select(_ENERGY_SCHEMA.names).cast(_ENERGY_SCHEMA)
            tables["span_energy"] = scratch.load("span_energy", energy)
            run(
                insert + _ELECTRICITY_LINES.format(**tables) + JOIN_NULLS,
                {"usd_per_kwh": electricity.usd_per_kwh, "deployments": list(electricity.deployments)},
            )
        return ClickHouseBill(self.transport, scratch, held)
