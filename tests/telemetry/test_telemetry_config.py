"""The telemetry section of airlock.yaml: optional, validated, errors naming the key and the line."""

from __future__ import annotations

import pytest

from airlock.config import parse_config
from airlock.errors import ConfigError

BASE = """\
upstreams:
  - name: up
    base_url: http://10.0.0.5:8000/v1
    region: eu
    jurisdiction: EU
    models: [{name: m}]
api_keys:
  - {tenant: acme, key_env: ACME_KEY}
"""


def test_defaults_receive_and_do_not_export() -> None:
    cfg = parse_config(BASE)
    assert cfg.telemetry.otlp_receiver.enabled and cfg.telemetry.otlp_export is None


def test_export_section() -> None:
    cfg = parse_config(
        BASE
        + "telemetry:\n  otlp_export:\n    endpoint: http://collector:4318/v1/traces\n"
        + "    headers_env: {Authorization: COLLECTOR_AUTH}\n    interval_s: 2\n"
    )
    export = cfg.telemetry.otlp_export
    assert export is not None and export.endpoint == "http://collector:4318/v1/traces" and export.interval_s == 2


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("telemetry:\n  otlp_export:\n    endpoint: collector:4318\n", "endpoint"),
        (
            "telemetry:\n  otlp_export:\n    endpoint: http://c:4318/v1/traces\n    headers_env: {X: 'Bearer abc'}\n",
            "headers_env",
        ),
        ("telemetry:\n  otlp_receiver: {enabled: true, extra: 1}\n", "extra"),
    ],
)
def test_bad_sections_name_the_key_and_line(section: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(BASE + section)
    assert key in e.value.detail and "line" in e.value.detail
