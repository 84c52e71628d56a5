"""The ClickHouse transport on the real engine: values travel as server-side parameters (never pasted
into SQL), Arrow goes in and comes out, a retried insert under one token lands once, and failures are
the store's errors. Each test runs on chdb in process and, with AIRLOCK_TEST_CLICKHOUSE_URL, on a server."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pyarrow as pa
import pytest

from airlock.errors import StoreError, StoreUnavailable
from airlock.store.clickhouse.transport import ChdbTransport, ClickHouseTransport, HttpTransport, param_text

AWKWARD = ["plain", "it's", 'a "quote"', "back\\slash", "tab\there", "new\nline", "{x:String}", "ünï©ødé", ""]


def test_string_parameters_arrive_as_given(any_clickhouse: ClickHouseTransport) -> None:
    for value in AWKWARD:
        rows = any_clickhouse.query_rows("SELECT {v:String} AS v, length({v:String}) AS n", {"v": value})
        assert rows == [{"v": value, "n": len(value.encode())}]


def test_arrays_nulls_and_numbers_as_parameters(any_clickhouse: ClickHouseTransport) -> None:
    rows = any_clickhouse.query_rows(
        "SELECT {a:Array(String)} AS a, {n:Nullable(Int64)} AS n, {f:Float64} AS f, {i:Int64} AS i",
        {"a": AWKWARD, "n": None, "f": 0.1, "i": -(2**62)},
    )
    assert rows == [{"a": AWKWARD, "n": None, "f": 0.1, "i": -(2**62)}]


def test_a_parameter_is_never_sql(any_clickhouse: ClickHouseTransport) -> None:
    any_clickhouse.command("CREATE TABLE t (k String) ENGINE = MergeTree ORDER BY k")
    any_clickhouse.command("INSERT INTO t (k) VALUES ({k:String})", {"k": "x'); DROP TABLE t; --"})
    assert any_clickhouse.query_rows("SELECT k FROM t") == [{"k": "x'); DROP TABLE t; --"}]


def test_arrow_in_and_out_with_maps_lists_and_dotted_names(any_clickhouse: ClickHouseTransport) -> None:
    any_clickhouse.command(
        "CREATE TABLE t (`a.b` Nullable(String), n Int64, m Map(String, String), l Array(String))"
        " ENGINE = MergeTree ORDER BY n"
    )
    data = pa.table(
        {
            "a.b": ["x", None],
            "n": [1, 2],
            "m": pa.array([[("k", "v")], []], type=pa.map_(pa.string(), pa.string())),
            "l": [["p", "q"], []],
        }
    )
    any_clickhouse.insert_arrow("t", data)
    table = any_clickhouse.query_arrow("SELECT `a.b`, n, m, l FROM t ORDER BY n")
    assert table.column_names == ["a.b", "n", "m", "l"]
    assert any_clickhouse.query_rows("SELECT `a.b`, n, m, l FROM t ORDER BY n") == [
        {"a.b": "x", "n": 1, "m": {"k": "v"}, "l": ["p", "q"]},
        {"a.b": None, "n": 2, "m": {}, "l": []},
    ]


def test_an_insert_retried_under_its_token_lands_once(any_clickhouse: ClickHouseTransport) -> None:
    any_clickhouse.command(
        "CREATE TABLE t (n Int64) ENGINE = MergeTree ORDER BY n SETTINGS non_replicated_deduplication_window = 100"
    )
    data = pa.table({"n": [1, 2, 3]})
    any_clickhouse.insert_arrow("t", data, dedup_token="w1.7")
    any_clickhouse.insert_arrow("t", data, dedup_token="w1.7")
    any_clickhouse.insert_arrow("t", data, dedup_token="w1.8")
    assert any_clickhouse.query_rows("SELECT count() AS c FROM t") == [{"c": 6}]


def test_a_refused_statement_is_a_store_error(any_clickhouse: ClickHouseTransport) -> None:
    with pytest.raises(StoreError, match=r"no_such_table|UNKNOWN_TABLE"):
        any_clickhouse.query_rows("SELECT * FROM no_such_table")
    with pytest.raises(StoreError):
        any_clickhouse.insert_arrow("no_such_table", pa.table({"n": [1]}))
    with pytest.raises(StoreError, match="deduplication token"):
        any_clickhouse.insert_arrow("t", pa.table({"n": [1]}), dedup_token="x' OR 1")


def test_chdb_transports_share_one_engine_apart_by_database(
    chdb_clickhouse: ClickHouseTransport, tmp_path: Path
) -> None:
    clickhouse = chdb_clickhouse
    assert isinstance(clickhouse, ChdbTransport)
    other = ChdbTransport(clickhouse.path, clickhouse.database + "_other")
    try:
        other.command("CREATE TABLE t (n Int64) ENGINE = MergeTree ORDER BY n")
        other.insert_arrow("t", pa.table({"n": [5]}))
        assert other.query_rows("SELECT n FROM t") == [{"n": 5}]
        with pytest.raises(StoreError):  # the same name in the fixture's database: not there
            clickhouse.query_rows("SELECT n FROM t")
    finally:
        other.command(f"DROP DATABASE {other.database}")
        other.close()
    with pytest.raises(StoreError, match="one engine per process"):
        ChdbTransport(tmp_path / "elsewhere", "x")
    with pytest.raises(StoreError, match="closed"):
        other.query_rows("SELECT 1")


def test_param_text_is_clickhouse_s_escaped_form() -> None:
    assert param_text("a\tb\\c\nd") == "a\\tb\\\\c\\nd"
    assert param_text(None) == "\\N"
    assert param_text(["it's", None]) == "['it\\'s',NULL]"
    with pytest.raises(StoreError):
        param_text(object())


def test_a_server_that_cannot_be_reached_is_unavailable() -> None:
    with socket.socket() as held:  # a port of ours that nothing listens on
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}"):
            HttpTransport(f"http://127.0.0.1:{port}", "airlock", connect_timeout_s=2)
        assert time.monotonic() - started < 10


def test_an_unreachable_server_is_named_without_its_password() -> None:
    from airlock.errors import StoreUnavailable
    from airlock.store.clickhouse.transport import HttpTransport

    with pytest.raises(StoreUnavailable) as e:
        HttpTransport("http://airlock:hunter2-secret@127.0.0.1:1", "record", connect_timeout_s=1)
    assert "hunter2-secret" not in str(e.value) and "airlock:***@127.0.0.1:1" in str(e.value)
