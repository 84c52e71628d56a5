"""Each package's public face: its __init__.py names what it exports in __all__, the names are as pinned
here (a change to a package's face is deliberate), and what other packages import from a package is on it."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import airlock

EXPORTS: dict[str, list[str]] = {
    "airlock": ["__version__"],
    "airlock.cli": [],
    "airlock.config": ["Config", "ModelSpec", "Route", "Target", "Upstream", "load_config", "parse_config"],
    "airlock.demo": ["run_demo"],
    "airlock.energy": ["PRESETS", "EnergyReadingRepository", "Profile", "Profiles", "Reading", "build_profile"],
    "airlock.gateway": ["Surface", "build_app", "build_state"],
    "airlock.guards": ["Guard", "GuardChain", "GuardedCall", "Outcome", "Verdict"],
    "airlock.store": ["Stores", "build_stores", "embedded_stores", "writer_sinks"],
    "airlock.ledger": [
        "DIMENSIONS",
        "Bill",
        "CostReport",
        "CostRow",
        "LedgerItems",
        "LineItemIn",
        "build_bill",
        "call_cost",
        "cost_report",
        "find_model",
        "price_in_effect",
        "price_rows",
    ],
    "airlock.query": ["Filter", "MEASURES", "QueryError", "QueryResult", "QuerySpec", "SORTS", "run_query"],
    "airlock.record": [
        "HOP_SCHEMA",
        "SPAN_SCHEMA",
        "BatchWriter",
        "Recorder",
        "format_traceparent",
        "new_span_id",
        "new_trace_id",
        "parse_traceparent",
    ],
    "airlock.limits": ["LimitGuard", "policy_header", "state_header"],
    "airlock.replay": ["SpanFidelity", "TraceFidelity", "check_traces"],
    "airlock.sampling": ["Decision", "Sampler", "SpanFacts", "TraceState"],
    "airlock.sim": ["SimProfile", "build_sim_app", "run_sim"],
    "airlock.slices": ["METRICS", "Slice", "SliceOptions", "SliceReport", "find_slices", "report_rows"],
    "airlock.store.embedded": [
        "BlobCorrupt",
        "BlobReader",
        "DataDir",
        "DuckDBSpanReader",
        "PackWriter",
        "ParquetSegments",
        "SQLiteState",
    ],
    "airlock.store.clickhouse": [],  # its modules are imported by their full path
    "airlock.store.postgres": [
        "PostgresEnergyReadings",
        "PostgresExportCursors",
        "PostgresLedgerItems",
        "PostgresReplayRuns",
        "PostgresSamplerLock",
        "PostgresSamplingState",
        "PostgresState",
        "PostgresWriterRegistry",
    ],
    "airlock.store.redis": ["RedisLimits", "open_redis"],
    "airlock.store.s3": ["BlobLocator", "S3Bucket", "S3PackWriter", "S3PayloadReader", "open_s3"],
    "airlock.telemetry": [
        "TRACES_PATH",
        "Decoded",
        "OtlpDecodeError",
        "decode_json",
        "decode_protobuf",
        "export_request",
        "install",
    ],
    "airlock.tokens": [
        "Tokenizer",
        "TokenizerUnavailable",
        "available",
        "count",
        "family_of",
        "get_encoding",
        "get_tokenizer",
        "load_local",
    ],
}
# A folder of modules with no __init__.py yet (a namespace package): its face is wired with the store's seam.
NAMESPACE_PACKAGES: set[str] = set()

ROOT = Path(airlock.__file__).parent


def package_dirs() -> dict[str, Path]:
    """Every folder under src/airlock holding Python modules, by package name."""
    found = {}
    for path in ROOT.rglob("*.py"):
        folder = path.parent
        found[".".join(folder.relative_to(ROOT.parent).parts)] = folder
    return found


def test_every_package_is_pinned() -> None:
    dirs = package_dirs()
    assert set(dirs) == set(EXPORTS) | NAMESPACE_PACKAGES
    assert all((dirs[name] / "__init__.py").exists() for name in EXPORTS)
    # A namespace package that gains an __init__.py has a face to pin: move it into EXPORTS.
    assert not any((dirs[name] / "__init__.py").exists() for name in NAMESPACE_PACKAGES)


@pytest.mark.parametrize("package", sorted(EXPORTS))
def test_each_package_exports_what_it_is_pinned_to(package: str) -> None:
    module = importlib.import_module(package)
    assert "__all__" in vars(module), f"{package}/__init__.py has no __all__"
    assert sorted(module.__all__) == sorted(EXPORTS[package])
    assert len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        assert hasattr(module, name), f"{package}.__all__ names {name}, which it does not define"


def test_what_other_packages_import_from_a_package_is_on_its_face() -> None:
    """`from airlock.ledger import call_cost` anywhere in src must name an export (or a submodule)."""
    missing = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom) or node.module not in EXPORTS or node.level:
                continue
            for alias in node.names:
                submodule = ROOT.parent.joinpath(*node.module.split("."), alias.name)
                if alias.name not in EXPORTS[node.module] and not (
                    submodule.with_suffix(".py").exists() or submodule.is_dir()
                ):
                    missing.append(f"{path.relative_to(ROOT.parent)}: {node.module}.{alias.name}")
    assert missing == []
