"""Two regions, each with its own ClickHouse record and PostgreSQL state: the cross-region views run in
each region's stores and bring back only their findings and totals, listed by region."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import yaml

from airlock.store.clickhouse.migrate import apply_migrations
from airlock.store.clickhouse.sink import with_batch
from airlock.store.clickhouse.transport import HttpTransport
from airlock.store.embedded import DataDir
from airlock.store.embedded.synthetic import Attribute, Planted, Workload, write_workload

DIGEST = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"


def _region_record(tmp: Path, url: str, database: str, planted_region: str) -> None:
    """A synthetic record whose failing slice is the region's own, inserted into the region's ClickHouse."""
    data = DataDir.at(tmp / database)
    attrs = [
        Attribute("region", 3, "airlock.upstream.region"),
        Attribute("tenant", 4, "airlock.tenant"),
        Attribute("feature", 5),
    ]
    write_workload(
        data, Workload(6_000, attrs, planted=[Planted({"feature": planted_region})], spans_per_segment=6_000)
    )
    transport = HttpTransport(url, database)
    apply_migrations(transport)
    for seq, path in enumerate(sorted(data.spans.glob("*.parquet"))):
        transport.insert_arrow("spans", with_batch(pq.read_table(path), "synthetic", seq))
    transport.close()


def test_cross_region_views_come_back_by_region(tmp_path: Path, postgres_dsn: str, clickhouse_url: str) -> None:
    _region_record(tmp_path, clickhouse_url, "record_eu", "f1")
    _region_record(tmp_path, clickhouse_url, "record_us", "f3")
    region = {"postgres": {"dsn_env": "TEST_PG_DSN"}, "clickhouse": {"url_env": "TEST_CH_URL"}}
    config = {
        "data_dir": str(tmp_path / "data"),
        "node": {"name": "eu-1", "region": "eu-west-1"},
        "store": {
            "regions": {
                "eu-west-1": {**region, "clickhouse": {"url_env": "TEST_CH_URL", "database": "record_eu"}},
                "us-east-1": {**region, "clickhouse": {"url_env": "TEST_CH_URL", "database": "record_us"}},
            }
        },
        "upstreams": [
            {
                "name": "u",
                "base_url": "http://127.0.0.1:9/v1",
                "region": "eu-west-1",
                "jurisdiction": "EU",
                "models": [{"name": "m"}],
            },
        ],
        "api_keys": [{"tenant": "acme", "key_sha256": DIGEST}],
    }
    path = tmp_path / "airlock.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "TEST_PG_DSN": postgres_dsn, "TEST_CH_URL": clickhouse_url}

    def cli(*args: str) -> object:
        done = subprocess.run(
            [sys.executable, "-m", "airlock", *args, "-c", str(path), "--regions", "all", "--format", "json"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return orjson.loads(done.stdout)

    found = cli("slices")
    assert isinstance(found, list)
    top = {r["region"]: r["slice"] for r in found if r["rank"] == 1}
    assert top == {"eu-west-1": "feature=f1", "us-east-1": "feature=f3"}  # each region its own slice
    bill = cli("cost", "report", "--by", "tenant")
    assert isinstance(bill, dict) and bill["by"] == ["region", "tenant"]
    assert {r["key"]["region"] for r in bill["rows"]} == {"eu-west-1", "us-east-1"}
