"""The record's tables on ClickHouse: `spans`, `hops` and `blob_index`, with the column names of
record/schema.py's SPAN_SCHEMA and HOP_SCHEMA and store/embedded/blobs.py's INDEX_SCHEMA, plus
`writer_id` and `seq` (the writer batch a row came from), and `batches` (one row per batch whose three
inserts all succeeded: what `covers` answers from).

The tables themselves are made by the numbered migrations (migrations/NNNN_*.sql, see migrate.py); this
module says what each Arrow column becomes, so that the tests can check the migrated tables against the
Arrow schemas and `missing_column_sql` can print the one migration line a new span column needs.

Types: string -> Nullable(String), LowCardinality for the columns with few distinct values (tenant,
model, status, kind, upstream, ...); intN -> Nullable(IntN); float64 -> Nullable(Float64); bool ->
Nullable(Bool); list<string> -> Array(String) and map<string,string> -> Map(String, String) (ClickHouse
has no nullable arrays or maps: an absent one reads back empty). The key columns (trace_id, span_id,
start_ns) are not nullable: the recorder fills them on every row, also on a partial one.
"""

from __future__ import annotations

import pyarrow as pa

from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.store.clickhouse.transport import quoted
from airlock.store.embedded.blobs import INDEX_SCHEMA

SPANS, HOPS, BLOB_INDEX, BATCHES = "spans", "hops", "blob_index", "batches"
BATCH_COLUMNS = ("writer_id", "seq")  # on spans, hops and blob_index: the writer batch a row came from

# Columns with a handful of distinct values: dictionary-encoded by ClickHouse (LowCardinality).
LOW_CARDINALITY = frozenset(
    {
        "kind",
        "status",
        "error_type",
        "airlock.node",
        "airlock.node.region",
        "airlock.tenant",
        "airlock.intent",
        "gen_ai.operation.name",
        "gen_ai.request.model",
        "gen_ai.response.model",
        "airlock.local.tokenizer",
        "airlock.script",
        "airlock.prompt.name",
        "airlock.route",
        "airlock.upstream",
        "airlock.upstream.region",
        "airlock.upstream.jurisdiction",
        "airlock.upstream.model",
        "airlock.sample.reason",
        "airlock.source",
        "otel.span_kind",
        "otel.scope.name",
        # hops
        "node",
        "upstream",
        "region",
        "jurisdiction",
        "deployment",
        "outcome",
    }
)
# Filled on every row: the sort and partition keys, not nullable.
REQUIRED = {SPANS: frozenset({"trace_id", "span_id", "start_ns"}), HOPS: frozenset({"trace_id", "span_id", "start_ns"})}

_SCALARS = {
    pa.string(): "String",
    pa.int64(): "Int64",
    pa.int32(): "Int32",
    pa.int16(): "Int16",
    pa.float64(): "Float64",
    pa.bool_(): "Bool",
}

ARROW_SCHEMAS = {SPANS: SPAN_SCHEMA, HOPS: HOP_SCHEMA, BLOB_INDEX: INDEX_SCHEMA}


def clickhouse_type(table: str, field: pa.Field) -> str:
    """The ClickHouse type of an Arrow column of `table`."""
    typ = field.type
    if pa.types.is_map(typ):
        return f"Map({_SCALARS[typ.key_type]}, {_SCALARS[typ.item_type]})"
    if pa.types.is_list(typ):
        return f"Array({_SCALARS[typ.value_type]})"
    base = _SCALARS[typ]
    if field.name in REQUIRED.get(table, ()) or table == BLOB_INDEX:
        out = base  # the blob index's rows are whole by construction
    else:
        out = f"Nullable({base})" if field.nullable else base
    return f"LowCardinality({out})" if field.name in LOW_CARDINALITY and base == "String" else out


def column_definitions(table: str) -> list[str]:
    """`name Type` for each Arrow column of the table, in schema order."""
    return [f"{quoted(f.name)} {clickhouse_type(table, f)}" for f in ARROW_SCHEMAS[table]]


def missing_column_sql(table: str, present: set[str]) -> list[str]:
    """The migration lines that add each Arrow column `table` lacks (for a new column in record/schema.py)."""
    return [
        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {quoted(f.name)} {clickhouse_type(table, f)};"
        for f in ARROW_SCHEMAS[table]
        if f.name not in present
    ]
