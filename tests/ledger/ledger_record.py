"""Writing a small, exact record (spans and hops) into a data directory, the way the writer does:
Parquet segments under data/segments, read back by the same DuckDB views as everything else."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from airlock.config import load_config
from airlock.config.schema import Config
from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.store.embedded import DataDir, ParquetSegments

DAY = 86_400 * 10**9
T0 = 1_780_000_000 * 10**9  # 2026-05-28 UTC


def span(n: int, **cols: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "trace_id": f"{n:032x}",
        "span_id": f"{n:016x}",
        "request_id": f"{n:016x}",
        "kind": "model.chat",
        "start_ns": T0 + n * 10**9,
        "end_ns": T0 + n * 10**9 + 500_000_000,
        "status": "ok",
        "airlock.tenant": "acme",
        "airlock.route": "chat",
        "airlock.upstream": "up-a",
        "airlock.upstream.model": "m-large",
        "gen_ai.request.model": "chat",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 100,
        "airlock.usage.reported": True,
        "airlock.local.input_tokens": 990,
        "airlock.local.output_tokens": 101,
        "airlock.attempts": 1,
        "attributes": {},
    }
    row.update(cols)
    return row


def hop(s: dict[str, Any], attempt: int, upstream: str, outcome: str) -> dict[str, Any]:
    return {
        "trace_id": s["trace_id"],
        "span_id": s["span_id"],
        "attempt": attempt,
        "upstream": upstream,
        "start_ns": s["start_ns"],
        "end_ns": s["start_ns"] + 1000,
        "outcome": outcome,
    }


def write_record(data_dir: Path, spans: list[dict[str, Any]], hops: list[dict[str, Any]] | None = None) -> None:
    data = DataDir.at(data_dir)
    data.create()
    segments = ParquetSegments(data)
    seq = len(list(data.spans.glob("*.parquet"))) + 1
    segments.write(
        "test_1_abc",
        seq,
        pa.Table.from_pylist(spans, schema=SPAN_SCHEMA),
        pa.Table.from_pylist(hops or [], schema=HOP_SCHEMA),
    )


def config(tmp: Path, **sections: Any) -> Config:
    """Two upstreams serving m-large (up-a under the name m-large, up-b as m-large-v2), a route 'chat'
    over both, and a tenant acme."""
    price = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
    cfg: dict[str, Any] = {
        "data_dir": str(tmp / "data"),
        "upstreams": [
            {
                "name": "up-a",
                "base_url": "http://127.0.0.1:9/v1",
                "region": "eu-west-1",
                "jurisdiction": "EU",
                "models": [{"name": "m-large", "prices": [price]}],
            },
            {
                "name": "up-b",
                "base_url": "http://127.0.0.1:10/v1",
                "region": "us-east-1",
                "jurisdiction": "US",
                "models": [{"name": "m-large", "upstream_model": "m-large-v2", "prices": [price]}],
            },
        ],
        "routes": [
            {
                "alias": "chat",
                "targets": [{"upstream": "up-a", "model": "m-large"}, {"upstream": "up-b", "model": "m-large"}],
            }
        ],
        "api_keys": [{"tenant": "acme", "key_sha256": hashlib.sha256(b"k").hexdigest()}],
        **sections,
    }
    path = tmp / "airlock.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return load_config(path)
