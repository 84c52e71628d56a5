"""The energy report's record read on ClickHouse: the model calls of a period as fact rows.

The roll-up (EnergyAggregator) reads no storage: it groups the Arrow table of per-call energy it is
given, so the embedded DuckDBEnergyAggregator serves this backend as it is. The counter readings are
control-plane state (EnergyReadingRepository), not the record's."""

from __future__ import annotations

import pyarrow as pa

from airlock.store.clickhouse.ledger import SPAN_WEIGHT, WEIGHTS_JOIN, ScratchTables, attribute, model_joins
from airlock.store.clickhouse.transport import ClickHouseTransport
from airlock.store.ledger import PricingTables

# call_facts' columns and types, as the embedded reader answers them.
CALL_FACT_SCHEMA = pa.schema(
    [
        ("span_id", pa.string()),
        ("trace_id", pa.string()),
        ("task", pa.string()),
        ("tenant", pa.string()),
        ("feature", pa.string()),
        ("task_type", pa.string()),
        ("upstream", pa.string()),
        ("model", pa.string()),
        ("start_ns", pa.int64()),
        ("end_ns", pa.int64()),
        ("ttft_ms", pa.float64()),
        ("in_tok", pa.int64()),
        ("cached", pa.int64()),
        ("out_tok", pa.int64()),
        ("weight", pa.float64()),
    ]
)

_FACTS = """
SELECT s.span_id AS span_id, s.trace_id AS trace_id, coalesce(s.`airlock.task`, s.trace_id) AS task,
       CAST(s.`airlock.tenant` AS Nullable(String)) AS tenant, {feature} AS feature,
       coalesce({task_type}, {feature}) AS task_type,
       CAST(s.`airlock.upstream` AS Nullable(String)) AS upstream, coalesce(rt.model, mn.name, mk.model) AS model,
       s.start_ns AS start_ns, greatest(coalesce(s.end_ns, s.start_ns), s.start_ns) AS end_ns, s.ttft_ms AS ttft_ms,
       coalesce(s.`gen_ai.usage.input_tokens`, s.`airlock.local.input_tokens`, 0) AS in_tok,
       coalesce(s.`gen_ai.usage.cache_read.input_tokens`, 0) AS cached,
       coalesce(s.`gen_ai.usage.output_tokens`, s.`airlock.local.output_tokens`, 0) AS out_tok,
       {weight} AS weight  -- traces it stands for (tail sampling)
FROM spans s
{weights_join}
{model_joins}
WHERE s.`airlock.upstream` IS NOT NULL AND startsWith(s.kind, 'model.') AND s.`airlock.replay.run` IS NULL
  AND s.start_ns >= {{since:Int64}} AND s.start_ns < {{until:Int64}}
ORDER BY s.start_ns, s.span_id
SETTINGS join_use_nulls = 1
"""


class ClickHouseCallFacts:
    """CallFactReader over the spans table."""

    def __init__(self, transport: ClickHouseTransport) -> None:
        self.transport = transport

    def call_facts(self, since_ns: int, until_ns: int, pricing: PricingTables) -> pa.Table:
        scratch = ScratchTables(self.transport)
        try:
            tables = {
                name: scratch.load(name, table)
                for name, table in (
                    ("model_keys", pricing.model_keys),
                    ("route_targets", pricing.route_targets),
                    ("model_names", pricing.model_names),
                )
            }
            query = _FACTS.format(
                feature=attribute("feature"),
                task_type=attribute("task_type"),
                weight=SPAN_WEIGHT,
                weights_join=WEIGHTS_JOIN,
                model_joins=model_joins(tables),
            )
            table = self.transport.query_arrow(query, {"since": since_ns, "until": until_ns})
        finally:
            scratch.close()
        return table.select(CALL_FACT_SCHEMA.names).cast(CALL_FACT_SCHEMA)
