"""airlock query over real Parquet segments in a tmp data directory: filters and group-bys on columns and
free attributes, the numbers checked against the rows themselves; cost from the config's prices."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from airlock.cli.main import cli
from airlock.config.schema import Config
from airlock.query import Filter, QueryError, QuerySpec, run_query
from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.store.embedded import DataDir, ParquetSegments
from airlock.store.embedded.copies import copies_dir, promote_attributes
from airlock.store.embedded.query_engine import DuckDBSpanQuery

T0 = 1_764_000_000 * 10**9


def _rows() -> list[dict]:
    rows = []
    for i in range(200):
        attrs = {"feature": ["search", "chat", "billing"][i % 3], "customer": f"c{i % 50}"}
        if i % 10 == 0:
            attrs["canary"] = "yes"
        rows.append(
            {
                "trace_id": f"{i:032x}",
                "span_id": f"{i:016x}",
                "kind": "model.chat",
                "start_ns": T0 + i * 10**9,
                "end_ns": T0 + i * 10**9 + (i + 1) * 10**6,
                "duration_ms": float(i + 1),
                "status": "error" if i % 3 == 2 and i % 2 == 0 else "ok",
                "airlock.tenant": "acme" if i < 120 else "globex",
                "airlock.upstream": "up-eu",
                "airlock.upstream.model": "big",
                "gen_ai.usage.input_tokens": 1000,
                "gen_ai.usage.output_tokens": 100,
                "attributes": attrs,
            }
        )
    return rows


@pytest.fixture
def data(tmp_path: Path) -> DataDir:
    d = DataDir.at(tmp_path / "data")
    d.create()
    rows = _rows()
    segments = ParquetSegments(d)
    for seq, part in enumerate((rows[:80], rows[80:])):
        segments.write("w1", seq, pa.Table.from_pylist(part, schema=SPAN_SCHEMA), HOP_SCHEMA.empty_table())
    return d


def test_group_by_attribute_counts_match_the_rows(data: DataDir) -> None:
    result = run_query(DuckDBSpanQuery(data), QuerySpec(by=("feature",), sort="spans"))
    by = {r["feature"]: r for r in result.rows}
    rows = _rows()
    for feature in ("search", "chat", "billing"):
        mine = [r for r in rows if r["attributes"]["feature"] == feature]
        assert by[feature]["spans"] == len(mine)
        assert by[feature]["errors"] == sum(r["status"] == "error" for r in mine)
        assert by[feature]["input_tokens"] == 1000 * len(mine)
    assert result.groups_total == 3 and result.spans_total == 200
    assert result.copies_built == 2


def test_filters_time_columns_attributes_and_missing(data: DataDir) -> None:
    spec = QuerySpec(
        since_ns=T0 + 50 * 10**9,
        until_ns=T0 + 150 * 10**9,
        where=(Filter.parse("tenant=acme"), Filter.parse("canary=yes"), Filter.parse("duration_ms>=60")),
    )
    result = run_query(DuckDBSpanQuery(data), spec)
    expected = [i for i in range(50, 150) if i < 120 and i % 10 == 0 and i + 1 >= 60]
    assert result.rows[0]["spans"] == len(expected)
    missing = run_query(DuckDBSpanQuery(data), QuerySpec(where=(Filter.parse("canary=null"),)))
    assert missing.rows[0]["spans"] == 180
    regex = run_query(DuckDBSpanQuery(data), QuerySpec(where=(Filter.parse("customer~^c4[0-9]$"),)))
    assert regex.rows[0]["spans"] == 40


def test_percentiles_and_sort_by_p95(data: DataDir) -> None:
    result = run_query(DuckDBSpanQuery(data), QuerySpec(by=("tenant",), sort="p95_ms"))
    assert [r["tenant"] for r in result.rows] == ["globex", "acme"]
    globex = result.rows[0]
    assert globex["p50_ms"] == pytest.approx(160.5)  # durations 121..200
    cheap_path = run_query(DuckDBSpanQuery(data), QuerySpec(by=("tenant",), sort="spans"))
    assert {r["tenant"]: r["p95_ms"] for r in cheap_path.rows}["globex"] == pytest.approx(globex["p95_ms"])


def test_high_cardinality_group_shows_the_top_groups(data: DataDir) -> None:
    result = run_query(DuckDBSpanQuery(data), QuerySpec(by=("customer", "feature"), sort="errors", limit=3))
    assert result.groups_total == 150  # 50 customers x 3 features, each seen
    assert len(result.rows) == 3 and result.rows[0]["errors"] >= result.rows[-1]["errors"]


def test_cost_from_config_prices(data: DataDir) -> None:
    config = Config.model_validate(
        {
            "upstreams": [
                {
                    "name": "up-eu",
                    "base_url": "http://127.0.0.1:1/v1",
                    "region": "eu",
                    "jurisdiction": "EU",
                    "models": [{"name": "big", "prices": [{"input_per_mtok": 2.0, "output_per_mtok": 10.0}]}],
                }
            ],
            "api_keys": [{"tenant": "t", "key_env": "X"}],
        }
    )
    result = run_query(DuckDBSpanQuery(data), QuerySpec(), config)
    assert result.rows[0]["cost_usd"] == pytest.approx(200 * (1000 * 2.0 + 100 * 10.0) / 1e6)


def test_time_buckets(data: DataDir) -> None:
    result = run_query(DuckDBSpanQuery(data), QuerySpec(by=("time:1m",), sort="spans", limit=10))
    minute = 60 * 10**9
    expected: dict[int, int] = {}
    for i in range(200):
        bucket = (T0 + i * 10**9) // minute * minute
        expected[bucket] = expected.get(bucket, 0) + 1
    assert {r["time:1m"]: r["spans"] for r in result.rows} == expected
    in_order = run_query(DuckDBSpanQuery(data), QuerySpec(by=("time:1m",), sort="time:1m", limit=10))
    assert [r["time:1m"] for r in in_order.rows] == sorted(expected)
    with pytest.raises(QueryError):
        run_query(DuckDBSpanQuery(data), QuerySpec(by=("time:soon",)))


def test_bad_filters_are_refused(data: DataDir) -> None:
    with pytest.raises(QueryError):
        Filter.parse("no operator here")
    with pytest.raises(QueryError):
        run_query(DuckDBSpanQuery(data), QuerySpec(where=(Filter.parse("duration_ms>fast"),)))
    with pytest.raises(QueryError):
        run_query(DuckDBSpanQuery(data), QuerySpec(sort="nonsense"))


def test_copies_follow_compaction(data: DataDir) -> None:
    run_query(DuckDBSpanQuery(data), QuerySpec())
    ParquetSegments(data).compact("w1", 2)
    result = run_query(DuckDBSpanQuery(data), QuerySpec(by=("feature",)))
    assert result.spans_total == 200 and result.copies_built == 1
    assert [p.name for p in copies_dir(data).glob("*.parquet")] == ["w1.00000000-00000001.parquet"]  # inputs' gone
    assert {r["feature"]: r["spans"] for r in result.rows} == {"search": 67, "chat": 67, "billing": 66}


def test_a_compaction_that_dropped_rows_gets_a_copy_of_its_own(data: DataDir) -> None:
    run_query(DuckDBSpanQuery(data), QuerySpec())
    kept = [r for r in _rows() if r["attributes"]["feature"] != "chat"]  # a sampler dropped these
    ParquetSegments(data).write("w1.tmp", 0, pa.Table.from_pylist(kept, schema=SPAN_SCHEMA), HOP_SCHEMA.empty_table())
    (data.spans / "w1.tmp.00000000-00000000.parquet").rename(data.spans / "w1.00000000-00000001.parquet")
    for seq in range(2):
        (data.spans / f"w1.{seq:08d}-{seq:08d}.parquet").unlink()
    result = run_query(DuckDBSpanQuery(data), QuerySpec(by=("feature",)))
    assert {r["feature"]: r["spans"] for r in result.rows} == {"search": 67, "billing": 66}


def test_promote_handles_null_maps_and_sparse_keys() -> None:
    maps = pa.array([[("a", "1")], None, [("b", "2"), ("a", "3")], []], type=pa.map_(pa.string(), pa.string()))
    columns, leftover = promote_attributes(maps)
    assert columns["a"].to_pylist() == ["1", None, "3", None]
    assert columns["b"].to_pylist() == [None, None, "2", None]
    assert not leftover
    capped, leftover = promote_attributes(maps, limit=1)
    assert list(capped) == ["a"] and leftover
    sliced, _ = promote_attributes(maps.slice(2, 2))
    assert sliced["a"].to_pylist() == ["3", None] and sliced["b"].to_pylist() == ["2", None]
    same_keys = pa.array([[("x", "1"), ("y", "2")], [("x", "3"), ("y", "4")]], type=maps.type)
    regular, _ = promote_attributes(same_keys)  # the fast path: every row has the same keys in order
    assert regular["x"].to_pylist() == ["1", "3"] and regular["y"].to_pylist() == ["2", "4"]


def test_cli_table_csv_json(data: DataDir) -> None:
    runner = CliRunner()
    out = runner.invoke(cli, ["query", "-d", str(data.root), "--by", "feature", "--format", "csv"])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[0].startswith("feature,spans,errors,error_rate")
    out = runner.invoke(cli, ["query", "-d", str(data.root), "--by", "tenant", "--format", "json"])
    assert out.exit_code == 0 and '"tenant": "acme"' in out.output
    out = runner.invoke(cli, ["query", "-d", str(data.root), "--where", "oops"])
    assert out.exit_code == 2 and "KEY=VALUE" in out.output
