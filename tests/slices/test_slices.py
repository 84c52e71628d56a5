"""The slice finder on synthetic segments in a tmp data directory: a planted failing combination comes
first, and traffic with none planted reports nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from airlock.cli.main import cli
from airlock.query import Filter
from airlock.slices import SliceOptions, find_slices
from airlock.slices.finder import combinations_possible
from airlock.slices.stats import excess, p_values
from airlock.store.embedded import DataDir
from airlock.store.embedded.slices import ParquetSliceCandidates
from airlock.store.embedded.synthetic import Attribute, Planted, Workload, write_workload

ATTRIBUTES = [
    Attribute("region", 5, "airlock.upstream.region"),
    Attribute("prompt_version", 6, "airlock.prompt.version"),
    Attribute("tenant", 12, "airlock.tenant"),
    Attribute("locale", 7),
    Attribute("feature", 4),
    Attribute("tier", 3),
    Attribute("device", 2),
    Attribute("customer", 5_000),  # high cardinality: no value is frequent enough to be a slice
    Attribute("experiment", 9),
    Attribute("shard", 16),
]


def _data(tmp_path: Path, planted: list[Planted], seed: float = 0.42, spans: int = 60_000) -> DataDir:
    data = DataDir.at(tmp_path / "data")
    write_workload(
        data, Workload(spans, ATTRIBUTES, base_error_rate=0.02, planted=planted, seed=seed, spans_per_segment=20_000)
    )
    return data


def test_planted_region_and_version_comes_first(tmp_path: Path) -> None:
    data = _data(tmp_path, [Planted({"region": "r3", "prompt_version": "p2"}, error_rate=0.5)])
    report = find_slices(ParquetSliceCandidates(data), SliceOptions())
    top = report.slices[0]
    assert dict(top.conditions) == {"airlock.upstream.region": "r3", "airlock.prompt.version": "p2"}
    assert top.rate > 0.4 and top.rest_rate < 0.03 and top.p_adjusted < 1e-10
    # its parents (region=r3 alone, p2 alone) and echoes (r3 & p2 & locale=...) are not listed
    assert all(len(s.conditions) != 1 for s in report.slices)
    assert all(not set(top.conditions) < set(s.conditions) for s in report.slices[1:])


def test_a_three_way_slice_is_found(tmp_path: Path) -> None:
    data = _data(tmp_path, [Planted({"tenant": "t4", "locale": "l2", "feature": "f1"}, error_rate=0.7)])
    report = find_slices(ParquetSliceCandidates(data), SliceOptions())
    assert dict(report.slices[0].conditions) == {"airlock.tenant": "t4", "locale": "l2", "feature": "f1"}


@pytest.mark.parametrize("seed", [0.1, 0.2, 0.3])
def test_nothing_is_reported_on_traffic_with_no_slice(tmp_path: Path, seed: float) -> None:
    report = find_slices(ParquetSliceCandidates(_data(tmp_path, [], seed=seed)), SliceOptions())
    assert report.failures > 1000 and report.tried > 1000
    assert report.slices == []


def test_latency_metric_finds_the_slow_slice(tmp_path: Path) -> None:
    data = _data(tmp_path, [Planted({"feature": "f3", "tier": "t0"}, error_rate=0.02, slow_factor=3.0)])
    assert find_slices(ParquetSliceCandidates(data), SliceOptions(metric="errors")).slices == []
    report = find_slices(ParquetSliceCandidates(data), SliceOptions(metric="latency"))
    assert dict(report.slices[0].conditions) == {"feature": "f3", "tier": "t0"}


def test_time_window(tmp_path: Path) -> None:
    data = _data(tmp_path, [Planted({"region": "r1", "prompt_version": "p1"})])
    start = 1_764_000_000 * 10**9
    report = find_slices(
        ParquetSliceCandidates(data), SliceOptions(since_ns=start + 10_000 * 10**6, until_ns=start + 20_000 * 10**6)
    )
    assert report.spans == 10_000


def test_where_narrows_the_traffic(tmp_path: Path) -> None:
    data = _data(tmp_path, [Planted({"region": "r3", "prompt_version": "p2"})])
    inside = find_slices(ParquetSliceCandidates(data), SliceOptions(where=(Filter.parse("tenant=t3"),)))
    assert 0 < inside.spans < 10_000  # one tenant of twelve
    assert dict(inside.slices[0].conditions) == {"airlock.upstream.region": "r3", "airlock.prompt.version": "p2"}
    elsewhere = find_slices(ParquetSliceCandidates(data), SliceOptions(where=(Filter.parse("prompt_version!=p2"),)))
    assert elsewhere.slices == []


def test_statistics() -> None:
    assert combinations_possible([2, 3], 3) == 2 + 3 + 6
    assert combinations_possible([2, 3, 4], 2) == 9 + (6 + 8 + 12)
    f_s, n_s = np.array([60, 10]), np.array([100, 100])
    assert excess(f_s, n_s, 100, 1000).tolist() == pytest.approx([60 - 100 * 40 / 900, 10 - 100 * 90 / 900])
    p = p_values(f_s, n_s, 100, 1000)
    assert p[0] < 1e-20 and p[1] > 0.5


def test_cli(tmp_path: Path) -> None:
    data = _data(tmp_path, [Planted({"region": "r3", "prompt_version": "p2"})])
    out = CliRunner().invoke(cli, ["slices", "-d", str(data.root), "--since", "2025-01-01"])
    assert out.exit_code == 0, out.output
    assert "airlock.prompt.version=p2 & airlock.upstream.region=r3" in out.output
    out = CliRunner().invoke(cli, ["slices", "-d", str(data.root), "--format", "json", "--metric", "cost"])
    assert out.exit_code == 0 and out.output.strip().startswith("[")


def test_cost_metric_prices_each_upstream(tmp_path: Path) -> None:
    from airlock.config.schema import Config

    attributes = [
        *ATTRIBUTES[:6],
        Attribute("upstream", 2, "airlock.upstream"),
        Attribute("m", 1, "airlock.upstream.model"),
    ]
    data = DataDir.at(tmp_path / "data")
    write_workload(data, Workload(30_000, attributes, spans_per_segment=10_000))
    upstream = {"region": "eu", "jurisdiction": "EU", "base_url": "http://127.0.0.1:1/v1"}
    config = Config.model_validate(
        {
            "upstreams": [
                {"name": "u0", **upstream, "models": [{"name": "m0", "prices": [{"input_per_mtok": 1.0}]}]},
                {"name": "u1", **upstream, "models": [{"name": "m0", "prices": [{"input_per_mtok": 9.0}]}]},
            ],
            "api_keys": [{"tenant": "t", "key_env": "X"}],
        }
    )
    assert (
        find_slices(ParquetSliceCandidates(data), SliceOptions(metric="cost")).slices == []
    )  # tokens alone: nothing stands out
    report = find_slices(ParquetSliceCandidates(data), SliceOptions(metric="cost"), config)
    assert report.slices[0].conditions == (("airlock.upstream", "u1"),)
