"""The bill and the record's owners on ClickHouse, from a small exact record: calls priced by the
model their route chose, a failed attempt billed at its input, cost attributes (only believable ones),
a posted item that names another tenant's trace, storage priced from what ClickHouse holds, and the
bill's scratch tables gone once it is closed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest

from airlock.errors import StoreError
from airlock.ledger import build_bill
from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.store import build_stores
from airlock.store.clickhouse.ledger import ClickHouseBillReader, ClickHouseRecordOwners
from airlock.store.clickhouse.migrate import apply_migrations
from airlock.store.clickhouse.sink import ClickHouseSegmentSink
from airlock.store.clickhouse.transport import ChdbTransport, ClickHouseTransport
from airlock.store.embedded import DataDir
from airlock.store.embedded.ledger import SQLiteLedgerItems
from airlock.store.ledger import LedgerItemRecord, RecordOwners, RevenueRule
from clickhouse_engine import fresh_database_name
from ledger.ledger_record import T0, config, hop, span


def _scratch_tables(transport: ClickHouseTransport) -> int:
    rows = transport.query_rows(
        "SELECT count() AS n FROM system.tables WHERE database = {db:String} AND startsWith(name, 'scratch_')",
        {"db": transport.database},
    )
    return int(rows[0]["n"])


@pytest.fixture
def recorded(tmp_path: Path, clickhouse: ClickHouseTransport) -> Path:
    costs = {"airlock.cost.tool": "0.5", "airlock.cost.api": "nan", "airlock.cost.network": "2e6", "feature": "f"}
    a = span(1, **{"airlock.task": "t1", "attributes": costs})
    b = span(2, status="error", **{"airlock.task": "t1", "airlock.attempts": 2})  # its task's feature: f
    c = span(3, **{"airlock.tenant": "beta", "airlock.upstream.model": "unknown", "airlock.route": None})
    d = span(4, **{"airlock.replay.run": "r1"})  # a replay is never billed
    spans = pa.Table.from_pylist([a, b, c, d], schema=SPAN_SCHEMA)
    hops = pa.Table.from_pylist([hop(b, 1, "up-b", "timeout"), hop(b, 2, "up-a", "ok")], schema=HOP_SCHEMA)
    ClickHouseSegmentSink(clickhouse).write("w1", 0, spans, hops)
    cfg = config(tmp_path)
    DataDir.at(cfg.data_dir).create()
    items = SQLiteLedgerItems(DataDir.at(cfg.data_dir).state_db)
    items.insert_all([LedgerItemRecord("acme", "i1", "tool", 2.0, T0 + 5, "sha", trace_id=c["trace_id"])])
    items.close()
    return tmp_path


def test_the_bill_of_a_small_record(recorded: Path, clickhouse: ClickHouseTransport) -> None:
    cfg = config(recorded)
    bill = build_bill(cfg, stores=replace(build_stores(cfg), bills=ClickHouseBillReader(clickhouse)))
    try:
        assert _scratch_tables(clickhouse) > 0
        got = {(r["source"], r["category"], r["span_id"]): r for r in bill.lines()}
        usd = {k: v["usd"] for k, v in got.items() if k[0] != "storage"}
        one, two, three = (f"{n:016x}" for n in (1, 2, 3))
        assert usd == pytest.approx(
            {
                ("span", "inference", one): (1000 * 1.0 + 100 * 2.0) / 1e6,
                ("span", "inference", two): (1000 * 1.0 + 100 * 2.0) / 1e6,
                ("hop", "inference", two): 990 * 1.0 / 1e6,  # the timed-out attempt, at its local input count
                ("attribute", "tool", one): 0.5,  # NaN and $2M are not believed
                ("span", "inference", three): None,  # no price for a model nobody configured
                ("item", "tool", None): 2.0,
            }
        )
        assert (
            got[("span", "inference", two)]["feature"] == "f"
            and got[("span", "inference", two)]["wasted"] == "failed_request"
        )
        assert got[("span", "inference", three)]["feature"] is None  # no attribute reads as none, not ''
        item = got[("item", "tool", None)]
        assert (item["tenant"], item["task"], item["feature"]) == ("acme", span(3)["trace_id"], None)  # not beta's
        assert bill.task_tenants(span(3)["trace_id"]) == {"acme": False, "beta": True}
        sources = [r["source"] for r in bill.task_lines("t1", "acme")]  # by start, then source
        assert sources == ["attribute", "span", "storage", "hop", "span", "storage"]
        assert bill.task_lines("t1", "beta") == []
        assert bill.unpriced() == [
            {"upstream": "up-a", "model": None, "calls": 1, "input_tokens": 1000, "output_tokens": 100}
        ]
        assert bill.categories() == ["inference", "telemetry_storage", "tool"]
        # storage: what ClickHouse holds for the record, priced per GiB-month for the retention period and
        # spread over every span it holds (four, none with payloads): the replay's share is on no bill
        assert bill.held_bytes > 0
        storage = sum(r["usd"] for r in bill.lines() if r["source"] == "storage")
        assert storage == pytest.approx(bill.held_bytes / 2**30 * 0.10 * 3 / 4)
        (total,) = bill.grouped([], RevenueRule(None, {}))
        assert total.total_usd == pytest.approx(0.0012 * 2 + 0.00099 + 0.5 + 2.0 + storage)
        # tasks: acme's t1 (ended in an error), beta's c, and acme's item on c's trace id (no span of acme's)
        assert (total.tasks, total.successful_tasks, total.revenue_usd) == (3.0, 1.0, None)
        by_tenant = {g.key["tenant"]: g for g in bill.grouped(["tenant"], RevenueRule(1.0, {"f": 3.0}))}
        assert set(by_tenant) == {"acme", "beta"}
        assert by_tenant["acme"].wasted_usd == pytest.approx({"failed_attempt": 0.00099, "failed_request": 0.0012})
        assert (by_tenant["acme"].tasks, by_tenant["acme"].successful_tasks, by_tenant["acme"].revenue_usd) == (
            2.0,
            None,
            None,
        )
        assert (by_tenant["beta"].successful_tasks, by_tenant["beta"].revenue_usd) == (1.0, 1.0)
        with pytest.raises(ValueError, match="cannot group by"):
            bill.grouped(["colour"], RevenueRule(None, {}))
    finally:
        bill.close()
    assert _scratch_tables(clickhouse) == 0


def test_record_owners(recorded: Path, clickhouse: ClickHouseTransport) -> None:
    owners = ClickHouseRecordOwners(clickhouse)
    a, c, d = (span(n)["trace_id"] for n in (1, 3, 4))
    assert owners.owners([], []) == RecordOwners({}, {})
    assert owners.owners([a, c, d, "nope"], ["t1", c, "nope"]) == RecordOwners(
        {a: frozenset({"acme"}), c: frozenset({"beta"})},  # a replay's spans own nothing
        {"t1": frozenset({"acme"}), c: frozenset({"beta"})},
    )


def test_a_record_clickhouse_cannot_read_is_a_store_error_and_leaves_nothing(
    tmp_path: Path, chdb_clickhouse: ClickHouseTransport
) -> None:
    """The bill fails as StoreError (what the analyses catch) when ClickHouse cannot answer, here a
    database never migrated and one whose hops table is gone (the bill fails halfway), and the
    scratch tables it had made by then are dropped."""
    assert isinstance(chdb_clickhouse, ChdbTransport)
    bare = ChdbTransport(chdb_clickhouse.path, fresh_database_name())
    try:
        with pytest.raises(StoreError):
            build_bill(
                config(tmp_path), stores=replace(build_stores(config(tmp_path)), bills=ClickHouseBillReader(bare))
            )
        with pytest.raises(StoreError):
            ClickHouseRecordOwners(bare).owners(["t"], [])
        apply_migrations(bare)
        one_span = pa.Table.from_pylist([span(1)], schema=SPAN_SCHEMA)
        ClickHouseSegmentSink(bare).write("w1", 0, one_span, HOP_SCHEMA.empty_table())
        bare.command("DROP TABLE hops")
        with pytest.raises(StoreError, match="hops"):
            build_bill(
                config(tmp_path), stores=replace(build_stores(config(tmp_path)), bills=ClickHouseBillReader(bare))
            )
        assert _scratch_tables(bare) == 0
    finally:
        bare.command(f"DROP DATABASE IF EXISTS {bare.database}")
        bare.close()
