"""Every line item of the bill, as one DuckDB table `lines`, computed from the record at report time:

- inference: each model call priced from its usage with the price in effect when it was served (the
  span's start time picks the price, so old spans keep the price they were served at); local counts
  stand in for usage a provider did not report, and the line is marked estimated;
- failed attempts: upstream attempts that failed over and that the provider is assumed to bill
  (ledger.failed_attempts_billed), priced at their input tokens, estimated;
- attributes `airlock.cost.<category>` (USD) on any span, e.g. from an app's own instrumentation;
- posted line items (POST /v1/ledger/items);
- telemetry storage: the bytes the data directory holds, times its price for the retention period,
  spread over the spans by the payload bytes each brought.

Each line's `usd` is what that one call or item cost. With tail sampling, `scale` says how many times
it counts in a total (its trace's adjusted count from the sampler's decisions: 1/p when kept, 0 when
dropped and kept only for replay) and `task_weight` how many tasks its task stands for, so totals and
task counts stay unbiased once the sampler has pruned the record; storage is what the data directory
really holds and posted items are exact, so both have scale 1.

Each line carries the task (airlock.task, else the trace), tenant, feature, user, model and upstream,
and `wasted` says why it bought nothing: failed_attempt, failed_request or abandoned_stream."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, get_args

import duckdb
import pyarrow as pa

from airlock.config.schema import Config
from airlock.ledger.items import LedgerItems, PostedCategory
from airlock.ledger.prices import price_rows
from airlock.store.embedded import DataDir, DuckDBSpanReader
from airlock.store.embedded.sampling import create_trace_weights_view

ROW_BYTES = 512  # what a span row and its hops take in the segments beside its payloads (an estimate)


def data_dir_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue  # a segment compacted away while we walked
    return total


def config_tables(config: Config) -> dict[str, pa.Table]:
    prices = price_rows(config)
    price_table = pa.table(
        {
            "upstream": [p.upstream for p in prices],
            "model": [p.model for p in prices],
            "from_ns": pa.array([p.from_ns for p in prices], pa.int64()),
            "to_ns": pa.array([p.to_ns for p in prices], pa.int64()),
            "p_in": pa.array([p.price.input_per_mtok for p in prices], pa.float64()),
            "p_out": pa.array([p.price.output_per_mtok for p in prices], pa.float64()),
            "p_cached": pa.array([p.price.cached_read_per_mtok for p in prices], pa.float64()),
            "p_cwrite": pa.array([p.price.cache_write_per_mtok for p in prices], pa.float64()),
            "p_reason": pa.array([p.price.reasoning_per_mtok for p in prices], pa.float64()),
            "p_fee": pa.array([p.price.per_request for p in prices], pa.float64()),
        }
    )
    keys: dict[tuple[str, str], str] = {}
    for up in config.upstreams:
        for m in up.models:
            keys.setdefault((up.name, m.upstream_model or m.name), m.name)
            keys.setdefault((up.name, m.name), m.name)
    model_keys = pa.table(
        {
            "upstream": [k[0] for k in keys],
            "key": [k[1] for k in keys],
            "model": list(keys.values()),
        }
    )
    targets = {(r.alias, t.upstream): t.model for r in config.routes for t in r.targets}
    route_targets = pa.table(
        {"route": [k[0] for k in targets], "upstream": [k[1] for k in targets], "model": list(targets.values())}
    )
    deployments = pa.table(
        {"upstream": [u.name for u in config.upstreams], "deployment": [u.deployment for u in config.upstreams]}
    )
    return {
        "prices": price_table,
        "model_keys": model_keys,
        "route_targets": route_targets,
        "upstream_deployments": deployments,
    }


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

_SPAN_LINES = """
CREATE TEMP TABLE span_facts AS
SELECT s.span_id, s.trace_id, s.start_ns, s.status, s.kind,
       coalesce(s."airlock.task", s.trace_id) AS task,
       s."airlock.tenant" AS tenant,
       -- a span without a feature (an app's root span sent over OTLP, say) belongs to its task's feature
       coalesce(s.attributes['feature'],
                max(s.attributes['feature']) OVER (PARTITION BY coalesce(s."airlock.task", s.trace_id))) AS feature,
       s."airlock.user" AS "user",
       s."airlock.upstream" AS upstream, s."airlock.route" AS route,
       coalesce(mk.model, rt.model) AS model,
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
LEFT JOIN trace_weights tw ON tw.trace_id = s.trace_id
LEFT JOIN model_keys mk ON mk.upstream = s."airlock.upstream"
     AND mk.key = coalesce(s."airlock.upstream.model", s."gen_ai.request.model")
LEFT JOIN route_targets rt ON rt.route = s."airlock.route" AND rt.upstream = s."airlock.upstream"
WHERE s.start_ns >= $since AND s.start_ns < $until AND s."airlock.replay.run" IS NULL;

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
SELECT trace_id, any_value(task) AS task, any_value(tenant) AS tenant, any_value(feature) AS feature
FROM span_facts GROUP BY trace_id;

INSERT INTO lines
SELECT 'item', i.category, i.amount_usd, FALSE, NULL,
       i.trace_id, coalesce(i.task, t.task, i.trace_id), i.tenant, coalesce(i.feature, t.feature, k.feature),
       i.user_id, NULL, i.vendor, i.occurred_ns, NULL, NULL, NULL,
       1.0, coalesce(tw.weight, k.weight, 1.0)  -- posted amounts are exact, and the task they belong to counts
FROM items i                                   -- as often as its trace stands for
LEFT JOIN trace_tasks t ON t.trace_id = i.trace_id
LEFT JOIN tasks k ON k.tenant IS NOT DISTINCT FROM i.tenant AND k.task = i.task
LEFT JOIN trace_weights tw ON tw.trace_id = i.trace_id;
"""


def storage_usd_per_weight(config: Config, reader: DuckDBSpanReader, held_bytes: int) -> float:
    """USD per unit of span weight (payload bytes + ROW_BYTES): what the data directory holds, spread over
    every span it holds, priced for the retention period."""
    row = reader.sql(
        'SELECT count(*) AS n, sum(coalesce("airlock.payload.request_bytes", 0)'
        ' + coalesce("airlock.payload.response_bytes", 0)) AS b FROM spans'
    )[0]
    weight = (row["b"] or 0) + ROW_BYTES * (row["n"] or 0)
    if weight <= 0:
        return 0.0
    st = config.ledger.telemetry_storage
    usd_held = held_bytes / 2**30 * st.usd_per_gib_month * st.retention_days / 30.0
    return usd_held / weight


class Bill:
    """The lines of one period, in an open DuckDB connection (tables lines, tasks, span_facts)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, held_bytes: int) -> None:
        self.con = con
        self.held_bytes = held_bytes

    def sql(self, query: str, params: Any = None) -> list[dict[str, Any]]:
        cur = self.con.execute(query, params) if params is not None else self.con.execute(query)
        cols = [d[0] for d in cur.description or []]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def close(self) -> None:
        self.con.close()


def build_bill(config: Config, since_ns: int | None = None, until_ns: int | None = None) -> Bill:
    """The bill of a period. A build that races a compaction (a segment vanishes under it) is retried once
    on a fresh listing of the segments, as every reader of the record does."""
    try:
        return _build_bill(config, since_ns, until_ns)
    except duckdb.IOException:
        return _build_bill(config, since_ns, until_ns)


def _build_bill(config: Config, since_ns: int | None, until_ns: int | None) -> Bill:
    data = DataDir.at(config.data_dir)
    reader = DuckDBSpanReader(data)
    held = data_dir_bytes(data.root) if data.root.exists() else 0
    per_weight = storage_usd_per_weight(config, reader, held)
    items_rows: list[dict[str, Any]] = []
    if data.state_db.exists():
        store = LedgerItems(data.state_db)
        try:
            items_rows = store.rows(since_ns, until_ns)
        finally:
            store.close()
    items = pa.Table.from_pylist([{k: r.get(k) for k in _ITEM_SCHEMA.names} for r in items_rows], schema=_ITEM_SCHEMA)
    con = reader.connect()
    try:
        for name, table in {**config_tables(config), "items": items}.items():
            con.register(name, table)
        create_trace_weights_view(con, data)
        params = {
            "since": since_ns or 0,
            "until": until_ns or 2**62,
            "billed": list(config.ledger.failed_attempts_billed),
            "row_bytes": ROW_BYTES,
            "usd_per_weight": per_weight,
            "categories": list(get_args(PostedCategory)),
        }
        for statement in _SPAN_LINES.split(";"):  # (no semicolon inside a statement, comments included)
            if statement.strip():
                used = {k: v for k, v in params.items() if f"${k}" in statement}
                con.execute(statement, used) if used else con.execute(statement)
        if config.ledger.electricity is not None:
            _add_electricity(con, config, since_ns, until_ns)
    except BaseException:
        con.close()
        raise
    return Bill(con, held)


def _add_electricity(
    con: duckdb.DuckDBPyConnection, config: Config, since_ns: int | None, until_ns: int | None
) -> None:
    """Electricity lines for calls served by upstreams of the configured deployments."""
    from airlock.energy.report import span_energy  # the energy capability builds on the ledger's tables

    electricity = config.ledger.electricity
    assert electricity is not None
    table, _ = span_energy(config, since_ns, until_ns)
    con.register("span_energy", table.select(["span_id", "joules", "source"]))
    con.execute(
        """
        INSERT INTO lines
        SELECT 'energy', 'electricity', e.joules / 3.6e6 * $usd_per_kwh, e.source <> 'measured',
               CASE f.status WHEN 'error' THEN 'failed_request' WHEN 'cancelled' THEN 'abandoned_stream' END,
               f.trace_id, f.task, f.tenant, f.feature, f."user", f.model, f.upstream, f.start_ns, f.span_id,
               NULL, NULL,
               -- measured joules are what the GPU used, all of it already spread over the calls kept
               CASE WHEN e.source = 'measured' THEN 1.0 ELSE f.weight END, f.weight
        FROM span_energy e JOIN span_facts f USING (span_id)
        JOIN upstream_deployments d ON d.upstream = f.upstream
        WHERE e.joules IS NOT NULL AND d.deployment IN (SELECT unnest($deployments::VARCHAR[]))""",
        {"usd_per_kwh": electricity.usd_per_kwh, "deployments": list(electricity.deployments)},
    )
