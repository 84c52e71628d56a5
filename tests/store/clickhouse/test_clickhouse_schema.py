"""The ClickHouse schema: the numbered migrations make spans, hops and blob_index with the Arrow
schemas' column names and mapped types, are recorded once applied, run again to no effect, and a
batch of spans and hops as the recorder builds them goes in and comes back unchanged."""

from __future__ import annotations

import pyarrow as pa
import pytest

from airlock.errors import StoreError
from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.store.clickhouse.migrate import apply_migrations, migrations, schema_version, set_retention, statements_of
from airlock.store.clickhouse.schema import ARROW_SCHEMAS, BATCH_COLUMNS, clickhouse_type, missing_column_sql
from airlock.store.clickhouse.transport import ClickHouseTransport


def _columns(transport: ClickHouseTransport, table: str) -> dict[str, str]:
    rows = transport.query_rows(
        "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {t:String} ORDER BY position",
        {"db": transport.database, "t": table},
    )
    return {r["name"]: r["type"] for r in rows}


@pytest.mark.parametrize("table", sorted(ARROW_SCHEMAS))
def test_tables_have_every_arrow_column_with_its_mapped_type(clickhouse: ClickHouseTransport, table: str) -> None:
    columns = _columns(clickhouse, table)
    lines = missing_column_sql(table, set(columns))
    assert not lines, "add a migration with:\n" + "\n".join(lines)
    assert list(columns) == [*ARROW_SCHEMAS[table].names, *BATCH_COLUMNS]
    for f in ARROW_SCHEMAS[table]:
        assert columns[f.name] == clickhouse_type(table, f), f.name


def test_types_map_as_documented() -> None:
    spans = {f.name: clickhouse_type("spans", f) for f in SPAN_SCHEMA}
    assert spans["airlock.tenant"] == "LowCardinality(Nullable(String))"
    assert spans["trace_id"] == "String" and spans["start_ns"] == "Int64"
    assert spans["attributes"] == "Map(String, String)"
    assert spans["gen_ai.response.finish_reasons"] == "Array(String)"
    assert spans["gen_ai.usage.input_tokens"] == "Nullable(Int64)"
    assert spans["airlock.request.stream"] == "Nullable(Bool)"


def test_migrations_are_recorded_and_run_once(clickhouse: ClickHouseTransport) -> None:
    numbers = [m.number for m in migrations()]
    assert numbers == sorted(numbers) and numbers[0] == 1
    assert schema_version(clickhouse) == numbers[-1]
    assert apply_migrations(clickhouse) == []
    rows = clickhouse.query_rows("SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in rows] == numbers


def test_statements_split_at_line_end_semicolons_and_skip_comment_only_chunks() -> None:
    text = (
        "-- a comment\nCREATE TABLE a (x String DEFAULT ';');\n\n"
        "-- trailing\nALTER TABLE a ADD COLUMN y Int64;\n-- end\n"
    )
    assert statements_of(text) == [
        "-- a comment\nCREATE TABLE a (x String DEFAULT ';')",
        "-- trailing\nALTER TABLE a ADD COLUMN y Int64",
    ]


def test_spans_partitioned_by_day_ordered_by_tenant_time_trace(clickhouse: ClickHouseTransport) -> None:
    rows = clickhouse.query_rows(
        "SELECT partition_key, sorting_key, engine FROM system.tables WHERE database = {db:String} AND name = 'spans'",
        {"db": clickhouse.database},
    )
    assert rows[0]["engine"] == "MergeTree"
    assert "start_ns" in rows[0]["partition_key"] and "toDate" in rows[0]["partition_key"]
    assert rows[0]["sorting_key"].replace(" ", "").startswith("`airlock.tenant`,intDiv(start_ns")
    indexes = clickhouse.query_rows(
        "SELECT expr, type FROM system.data_skipping_indices WHERE database = {db:String} AND table = 'spans'",
        {"db": clickhouse.database},
    )
    assert {"expr": "trace_id", "type": "bloom_filter"} in indexes


def _ttl(transport: ClickHouseTransport, table: str) -> str:
    rows = transport.query_rows(
        "SELECT create_table_query AS q FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        {"db": transport.database, "t": table},
    )
    query = str(rows[0]["q"])
    return query[query.index(" TTL ") :] if " TTL " in query else ""


def test_retention_sets_and_removes_a_ttl_on_spans_and_hops(clickhouse: ClickHouseTransport) -> None:
    assert _ttl(clickhouse, "spans") == ""
    set_retention(clickhouse, 30)
    for table in ("spans", "hops"):
        assert "toIntervalDay(30)" in _ttl(clickhouse, table)
    assert _ttl(clickhouse, "blob_index") == ""
    set_retention(clickhouse, None)
    assert _ttl(clickhouse, "spans") == ""
    with pytest.raises(StoreError):
        set_retention(clickhouse, 0)


def _span_batch() -> tuple[pa.Table, pa.Table]:
    base = 1_764_000_000 * 10**9
    spans = [
        {
            "trace_id": "t1",
            "span_id": "s1",
            "start_ns": base,
            "end_ns": base + 5_000_000,
            "duration_ms": 5.0,
            "status": "ok",
            "airlock.tenant": "acme",
            "gen_ai.response.finish_reasons": ["stop"],
            "gen_ai.usage.input_tokens": 12,
            "airlock.request.stream": True,
            "http_status": 200,
            "attributes": {"team": "search", "odd key": "it's"},
            "airlock.schema_version": 4,
        },
        {"trace_id": "t1", "span_id": "s2", "start_ns": base + 86_400 * 10**9, "status": "error"},
    ]
    hops = [{"trace_id": "t1", "span_id": "s1", "attempt": 1, "start_ns": base, "outcome": "ok", "http_status": 200}]
    return pa.Table.from_pylist(spans, schema=SPAN_SCHEMA), pa.Table.from_pylist(hops, schema=HOP_SCHEMA)


def test_a_recorder_batch_round_trips(clickhouse: ClickHouseTransport) -> None:
    spans, hops = _span_batch()
    n = spans.num_rows
    clickhouse.insert_arrow(
        "spans", spans.append_column("writer_id", pa.array(["w"] * n)).append_column("seq", pa.array([0] * n))
    )
    clickhouse.insert_arrow("hops", hops)
    back = clickhouse.query_rows("SELECT * EXCEPT (writer_id, seq) FROM spans ORDER BY span_id")
    expected = spans.to_pylist()
    for row in expected:
        row["attributes"] = dict(row["attributes"] or [])  # a map reads back as a dict, an absent one empty
        row["gen_ai.response.finish_reasons"] = row["gen_ai.response.finish_reasons"] or []
    assert back == expected
    parts = clickhouse.query_rows(
        "SELECT DISTINCT partition FROM system.parts WHERE database = {db:String} AND table = 'spans' AND active",
        {"db": clickhouse.database},
    )
    assert len(parts) == 2  # one part per UTC day
    assert clickhouse.query_rows("SELECT span_id, attempt, outcome FROM hops") == [
        {"span_id": "s1", "attempt": 1, "outcome": "ok"}
    ]
