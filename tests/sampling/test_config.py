"""The sampling section of airlock.yaml: off unless asked for, and a mistake names its key and line."""

from __future__ import annotations

import pytest

from airlock.config import parse_config
from airlock.errors import ConfigError

BASE = """\
upstreams:
  - {name: up, base_url: "http://10.0.0.5:8000/v1", region: r, jurisdiction: EU, models: [{name: m}]}
api_keys:
  - {tenant: acme, key_env: ACME_KEY}
"""


def test_sampling_is_off_by_default() -> None:
    assert parse_config(BASE).sampling.enabled is False


def test_a_sampling_section_loads() -> None:
    cfg = parse_config(
        BASE + "sampling:\n  enabled: true\n  span_budget_per_hour: 5000\n  slow: {over_ms: 2000}\n"
        "  rare: {attributes: [locale, feature]}\n  replay_reserve: 0.1\n"
    )
    s = cfg.sampling
    assert (s.enabled, s.span_budget_per_hour, s.slow.over_ms, s.slow.quantile) == (True, 5000, 2000, 0.99)
    assert s.rare.attributes == ["locale", "feature"] and s.replay_reserve == 0.1


@pytest.mark.parametrize(
    ("section", "named"),
    [
        ("sampling:\n  enabled: true\n  budget: 5\n", "sampling.budget"),
        ("sampling:\n  replay_reserve: 1.5\n", "sampling.replay_reserve"),
        ("sampling:\n  slow: {quantile: 1.0}\n", "sampling.slow.quantile"),
        ("sampling:\n  span_budget_per_hour: 0\n", "sampling.span_budget_per_hour"),
    ],
)
def test_a_bad_sampling_key_is_refused_with_its_name_and_line(section: str, named: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(BASE + section)
    assert named in e.value.detail and "line" in e.value.detail
