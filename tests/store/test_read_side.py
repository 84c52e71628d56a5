"""The embedded read side behind the analyses' protocols: the demo report's reads over real segments,
storage failures raised as the StoreError family, and no analysis importing a storage library."""

from __future__ import annotations

import ast
from pathlib import Path

import pyarrow as pa
import pytest

import airlock
from airlock.errors import StoreError
from airlock.query import QuerySpec, run_query
from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.slices import SliceOptions, find_slices
from airlock.store.demo import HopOutcome, RegionCalls
from airlock.store.embedded import DataDir, ParquetSegments
from airlock.store.embedded.demo import DuckDBDemoRecord
from airlock.store.embedded.query_engine import DuckDBSpanQuery
from airlock.store.embedded.slices import ParquetSliceCandidates

STORAGE_LIBRARIES = ("duckdb", "pyarrow.parquet", "sqlite3")
READ_SIDE_ANALYSES = ("query", "slices", "telemetry", "tokens", "demo")


def _span(i: int, **columns: object) -> dict[str, object]:
    return {"trace_id": f"{i:032x}", "span_id": f"{i:016x}", "start_ns": 1_000 + i, "duration_ms": float(i)} | columns


def _record(tmp_path: Path) -> DataDir:
    data = DataDir.at(tmp_path / "data")
    data.create()
    rows = [
        _span(1, status="ok", **{"airlock.upstream.region": "eu", "gen_ai.usage.input_tokens": 10}),
        _span(2, status="error", **{"airlock.upstream.region": "eu", "airlock.attempts": 2}),
        _span(3, status="ok", **{"airlock.upstream.region": "us", "gen_ai.usage.cache_read.input_tokens": 4}),
        _span(4, status="error", **{"airlock.payload.upstream_request": "ab" * 32}),
        _span(5, status="error", **{"airlock.source": "otlp", "airlock.upstream.region": "eu"}),
    ]
    hops = [
        {"trace_id": f"{2:032x}", "span_id": f"{2:016x}", "attempt": 1, "upstream": "eu-1", "outcome": "http_5xx"},
        {"trace_id": f"{2:032x}", "span_id": f"{2:016x}", "attempt": 2, "upstream": "us-1", "outcome": "ok"},
    ]
    ParquetSegments(data).write(
        "w1", 0, pa.Table.from_pylist(rows, schema=SPAN_SCHEMA), pa.Table.from_pylist(hops, schema=HOP_SCHEMA)
    )
    return data


def test_demo_record_reads(tmp_path: Path) -> None:
    record = DuckDBDemoRecord(_record(tmp_path))
    assert record.spans_recorded() == 5
    regions = record.calls_by_region()
    assert regions[0] == RegionCalls("eu", 2, 1, 1, 0, 1, 10, 0, 0, 1.5, pytest.approx(1.95))  # OTLP's left out
    by_region = {r.region: r for r in regions}
    assert set(by_region) == {"eu", "us", "(none: rejected or exhausted)"}
    assert (by_region["us"].cached, by_region["us"].p50_ms) == (4, 3.0)
    assert record.hop_outcomes() == [HopOutcome("eu-1", "http_5xx", 1), HopOutcome("us-1", "ok", 1)]
    assert record.first_failed_received_trace() == f"{5:032x}"
    assert record.upstream_request_digest(f"{4:032x}") == "ab" * 32
    assert record.upstream_request_digest(f"{1:032x}") is None


def test_a_damaged_segment_is_a_store_error(tmp_path: Path) -> None:
    """A segment that is not Parquet (a torn copy, a disk fault) reaches the analyses as StoreError, not
    as a pyarrow or DuckDB exception they would have to know."""
    data = _record(tmp_path)
    (data.spans / "w2.00000000-00000000.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(StoreError):
        run_query(DuckDBSpanQuery(data), QuerySpec(by=("status",)))
    with pytest.raises(StoreError):
        find_slices(ParquetSliceCandidates(data), SliceOptions())
    with pytest.raises(StoreError):
        DuckDBDemoRecord(data).spans_recorded()


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("package", READ_SIDE_ANALYSES)
def test_read_side_analyses_import_no_storage_library(package: str) -> None:
    root = Path(airlock.__file__).parent / package
    found = {
        f"{path.relative_to(root.parent)}: {name}"
        for path in sorted(root.rglob("*.py"))
        for name in _imported_modules(path)
        if any(name == lib or name.startswith(lib + ".") for lib in STORAGE_LIBRARIES)
    }
    assert not found
