"""Energy from profiles (batch from overlapping requests, cache hits discounted) and from readings, read
from a real record; the config's energy section."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from airlock.store.embedded.energy import SQLiteEnergyReadings

sys.path.insert(0, str(Path(__file__).parents[1] / "ledger"))

from counter_trace import T0, trace
from ledger_record import config, span, write_record

from airlock.config import parse_config
from airlock.config.schema import EnergyProfile
from airlock.energy import build_profile
from airlock.energy.batch import batch_bucket, mean_concurrency
from airlock.energy.report import energy_report
from airlock.errors import ConfigError

S = 10**9


def test_mean_concurrency_is_the_time_average_on_the_same_upstream() -> None:
    up = np.array(["a", "a", "a", "b"])
    start = np.array([0, 0, 5, 0]) * S
    end = np.array([10, 5, 10, 10]) * S
    got = mean_concurrency(up, start, end)
    # span 0 overlaps span 1 for its first half and span 2 for its second: always 2 in flight
    assert got.tolist() == pytest.approx([2.0, 2.0, 2.0, 1.0])
    assert mean_concurrency(np.array(["a"]), np.array([5]), np.array([5])).tolist() == [1.0]
    assert [batch_bucket(b) for b in (1.0, 2.4, 9, 40, 100, 999)] == ["1", "2-4", "5-16", "17-64", "65-256", "257+"]


def test_profile_interpolates_on_log_batch_and_discounts_cache_hits() -> None:
    p = build_profile(
        EnergyProfile(
            model="m",
            points=[
                {"batch": 1, "prefill_j_per_token": 0.2, "decode_j_per_token": 1.0},
                {"batch": 16, "prefill_j_per_token": 0.1, "decode_j_per_token": 0.5},
            ],
            cache_hit_discount=0.9,
            idle_share=0.2,
            pue=1.5,
        )
    )
    assert p.per_token(4) == pytest.approx((0.15, 0.75))  # log(4) is half way between log(1) and log(16)
    assert p.per_token(0.5) == (0.2, 1.0) and p.per_token(64) == (0.1, 0.5)
    gpu = 0.2 * (1000 - 800 + 800 * 0.1) + 1.0 * 50
    assert p.joules(1000, 800, 50, 1) == pytest.approx(gpu / 0.8 * 1.5)
    preset = build_profile(EnergyProfile(model="m", preset="llama-3.1-8b-h100", pue=1.0))
    assert preset.tier == "8b" and preset.pue == 1.0 and preset.per_token(64)[1] == pytest.approx(0.12)


def test_the_vectorised_profile_agrees_with_the_scalar_one() -> None:
    p = build_profile(EnergyProfile(model="m", preset="llama-3.1-70b-h100"))
    rng = np.random.default_rng(3)
    inp, out = rng.integers(0, 9000, 500).astype(float), rng.integers(0, 900, 500).astype(float)
    cached, batch = rng.integers(0, 9500, 500).astype(float), rng.uniform(0.5, 400, 500)
    many = p.joules_many(inp, cached, out, batch)
    one = [p.joules(inp[i], cached[i], out[i], batch[i]) for i in range(500)]
    assert many.tolist() == pytest.approx(one, rel=1e-12)


def test_energy_config_errors_name_the_key() -> None:
    base = (Path(__file__).parents[1] / "config" / "test_load.py").read_text().split('GOOD = """\\\n')[1]
    good = base.split('"""')[0]
    with pytest.raises(ConfigError, match="unknown energy preset"):
        parse_config(good + "energy:\n  profiles: [{model: llama-3-70b, preset: gpt-9}]\n")
    with pytest.raises(ConfigError, match=r"line \d+: energy\.profiles\.0"):
        parse_config(good + "energy:\n  profiles: [{model: llama-3-70b}]\n")
    with pytest.raises(ConfigError, match="unknown upstream 'nowhere'"):
        parse_config(good + "energy:\n  gpus: [{device: '0', upstream: nowhere}]\n")
    cfg = parse_config(good + "energy:\n  profiles: [{model: llama-3-70b, preset: llama-3.1-70b-h100}]\n")
    assert cfg.energy.profiles[0].preset == "llama-3.1-70b-h100"


def _profile_cfg(tmp: Path, **energy: object) -> object:
    points = [{"batch": 1, "prefill_j_per_token": 0.1, "decode_j_per_token": 1.0}]
    return config(
        tmp,
        energy={
            "grid_gco2e_per_kwh": 360.0,
            "profiles": [{"model": "m-large", "tier": "large", "points": points, "idle_share": 0.0, "pue": 1.0}],
            **energy,
        },
    )


def test_report_from_profiles_by_tier_batch_and_cache(tmp_path: Path) -> None:
    spans = [
        span(1, start_ns=T0, end_ns=T0 + S),  # alone: batch 1
        span(2, start_ns=T0 + 10 * S, end_ns=T0 + 11 * S, **{"gen_ai.usage.cache_read.input_tokens": 600}),
        span(
            3,
            start_ns=T0 + 10 * S,
            end_ns=T0 + 11 * S,
            **{"airlock.upstream": "up-b", "airlock.upstream.model": "m-large-v2"},
        ),
        span(4, start_ns=T0, end_ns=T0 + S, **{"airlock.upstream": None}),  # reached no upstream: no energy
    ]
    write_record(tmp_path / "data", spans)
    report = energy_report(_profile_cfg(tmp_path), ["model_tier", "cache"])
    rows = {(r["model_tier"], r["cache"]): r for r in report.rows}
    miss = 0.1 * 1000 + 1.0 * 100
    hit = 0.1 * (1000 - 600 + 600 * 0.1) + 1.0 * 100  # the default cache discount: 90%
    assert rows[("large", "miss")]["joules"] == pytest.approx(2 * miss)
    assert rows[("large", "hit")]["joules"] == pytest.approx(hit)
    total = report.total
    assert total["calls"] == 3 and total["tasks"] == 3
    assert total["tokens_per_j"] == pytest.approx(3 * 1100 / (2 * miss + hit))
    assert total["wh_per_task"] == pytest.approx((2 * miss + hit) / 3600 / 3)
    assert total["gco2e"] == pytest.approx((2 * miss + hit) / 3.6e6 * 360.0)
    assert report.no_energy == []


def test_report_measures_where_readings_cover_and_spreads_idle(tmp_path: Path) -> None:
    a = span(1, start_ns=T0 + 1 * S, end_ns=T0 + 3 * S, ttft_ms=100.0)
    b = span(2, start_ns=T0 + 2 * S, end_ns=T0 + 4 * S, ttft_ms=100.0, **{"gen_ai.usage.output_tokens": 300})
    outside = span(3, start_ns=T0 + 60 * S, end_ns=T0 + 61 * S)  # after the readings: from the profile
    write_record(tmp_path / "data", [a, b, outside])
    cfg = _profile_cfg(tmp_path, gpus=[{"device": "gpu-0", "upstream": "up-a"}], pue=1.1)
    readings = trace("gpu-0", [(a["start_ns"], a["end_ns"]), (b["start_ns"], b["end_ns"])], seconds=6.0)
    store = SQLiteEnergyReadings(Path(cfg.data_dir) / "state.sqlite3")
    store.add(readings, "nvml")
    store.close()
    report = energy_report(cfg, ["source"])
    rows = {r["source"]: r for r in report.rows}
    (device,) = report.devices
    assert device.attributed_j + device.idle_j == pytest.approx(device.read_j)
    assert device.read_j == pytest.approx((readings[-1].energy_mj - readings[0].energy_mj) / 1000)
    # Measured calls carry all the device's energy (idle spread over them in proportion), times PUE.
    assert rows["measured"]["calls"] == 2
    assert rows["measured"]["joules"] == pytest.approx(device.read_j * 1.1)
    assert rows["profile"]["calls"] == 1 and math.isclose(rows["profile"]["joules"], 0.1 * 1000 + 100)
    assert device.short_intervals > 0 and rows["measured"]["approximate_calls"] == 2


def test_a_zero_length_call_counts_itself_among_the_calls_in_flight() -> None:
    """Regression: the count at a zero-length call's instant was taken after its own end, so it left
    itself out (two calls starting together gave 1 instead of 2). Checked against a brute-force count."""
    import random

    import numpy as np

    from airlock.energy.batch import mean_concurrency

    assert mean_concurrency(np.array(["u", "u"]), np.array([37, 37]), np.array([37, 40])).tolist() == [2.0, 1.0]
    for trial in range(300):
        rng = random.Random(trial)
        n = rng.randint(1, 6)
        start = np.array([rng.randint(0, 50) for _ in range(n)])
        end = start + np.array([rng.choice([0, 0, rng.randint(0, 20)]) for _ in range(n)])
        got = mean_concurrency(np.array(["u"] * n), start, end)
        for i in np.flatnonzero(start == end):
            in_flight = sum(1 for j in range(n) if start[j] <= start[i] <= end[j])
            assert got[i] == in_flight, (trial, i)


def test_an_aliased_model_takes_its_own_profile(tmp_path: Path) -> None:
    """Regression: a model with upstream_model took the energy profile of the model named like its
    upstream name (m-mini measured as m-large)."""
    from test_bill import _aliased_config, aliased_calls

    write_record(tmp_path / "data", aliased_calls())
    point = {"batch": 1, "prefill_j_per_token": 0.1, "decode_j_per_token": 1.0}
    small = {**point, "prefill_j_per_token": 0.01, "decode_j_per_token": 0.1}
    profiles = [
        {"model": "m-large", "tier": "large", "points": [point], "idle_share": 0.0, "pue": 1.0},
        {"model": "m-mini", "tier": "mini", "points": [small], "idle_share": 0.0, "pue": 1.0},
    ]
    report = energy_report(_aliased_config(tmp_path, energy={"profiles": profiles}), ["model_tier"])
    rows = {r["model_tier"]: r for r in report.rows}
    assert rows["large"]["calls"] == 1 and rows["large"]["joules"] == pytest.approx(0.1 * 1000 + 1.0 * 100)
    assert rows["mini"]["calls"] == 2 and rows["mini"]["joules"] == pytest.approx(2 * (0.01 * 1000 + 0.1 * 100))
