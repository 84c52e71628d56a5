"""Config refusals about keys: one key shared by two tenants, and environment variables a config names
but the process does not have."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from airlock.config import parse_config
from airlock.config.load import environment_problems
from airlock.errors import ConfigError

DIGEST = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"

BASE = """\
data_dir: ./data
upstreams:
  - name: local-vllm
    base_url: http://10.0.0.5:8000/v1
    region: eu-central-1
    jurisdiction: EU
    api_key_env: VLLM_KEY
    models: [{name: llama-3-70b}]
api_keys:
"""


def test_two_tenants_with_the_same_key_hash_are_refused_naming_both_and_the_lines() -> None:
    text = BASE + f"  - {{tenant: acme, key_sha256: {DIGEST}}}\n  - {{tenant: globex, key_sha256: {DIGEST}}}\n"
    with pytest.raises(ConfigError) as e:
        parse_config(text)
    msg = e.value.detail
    assert "line 11: api_keys.1.key_sha256" in msg
    assert "'globex'" in msg and "api_keys.0 (tenant 'acme', line 10)" in msg


def test_two_tenants_reading_the_same_variable_are_refused() -> None:
    text = BASE + "  - {tenant: acme, key_env: SHARED}\n  - {tenant: globex, key_env: SHARED}\n"
    with pytest.raises(ConfigError, match=r"api_keys\.1\.key_env: tenant 'globex' has the same key as api_keys\.0"):
        parse_config(text)


def test_distinct_keys_load() -> None:
    other = "ab" * 32
    cfg = parse_config(BASE + f"  - {{tenant: acme, key_sha256: {DIGEST}}}\n  - {{tenant: b, key_sha256: {other}}}\n")
    assert [k.tenant for k in cfg.api_keys] == ["acme", "b"]


def test_unset_variables_are_named_unless_marked_optional() -> None:
    cfg = parse_config(BASE + "  - {tenant: acme, key_env: ACME_KEY}\n")
    problems = environment_problems(cfg, {})
    assert len(problems) == 2
    assert "upstreams.0.api_key_env: VLLM_KEY is not set" in problems[0] and "api_key_optional" in problems[0]
    assert "api_keys.0.key_env: ACME_KEY is not set" in problems[1] and "key_optional" in problems[1]
    assert environment_problems(cfg, {"VLLM_KEY": "up", "ACME_KEY": "sk-a"}) == []
    assert len(environment_problems(cfg, {"VLLM_KEY": "", "ACME_KEY": "sk-a"})) == 1  # empty is unset
    optional = parse_config(
        BASE.replace("api_key_env: VLLM_KEY", "api_key_env: VLLM_KEY\n    api_key_optional: true")
        + "  - {tenant: acme, key_env: ACME_KEY, key_optional: true}\n"
    )
    assert environment_problems(optional, {}) == []


def test_a_variable_holding_another_tenants_key_is_named() -> None:
    import hashlib

    digest = hashlib.sha256(b"sk-shared").hexdigest()
    cfg = parse_config(BASE + f"  - {{tenant: acme, key_sha256: {digest}}}\n  - {{tenant: globex, key_env: GLOBEX}}\n")
    (problem,) = environment_problems(cfg, {"VLLM_KEY": "up", "GLOBEX": "sk-shared"})
    assert "api_keys.1.key_env" in problem and "'acme'" in problem and "sk-shared" not in problem


def _airlock(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("VLLM_KEY", "ACME_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "airlock", *args], capture_output=True, text=True, timeout=30, env={**clean, **env}
    )


def test_config_check_warns_and_serve_refuses_an_unset_variable(tmp_path: Path) -> None:
    path = tmp_path / "airlock.yaml"
    path.write_text(BASE + "  - {tenant: acme, key_env: ACME_KEY}\n")
    check = _airlock("config", "check", str(path), env={"ACME_KEY": "sk-a"})
    assert check.returncode == 0 and "ok (1 upstreams" in check.stdout
    assert "warning" in check.stderr and "VLLM_KEY is not set" in check.stderr
    serve = _airlock("serve", "-c", str(path), env={"ACME_KEY": "sk-a"})
    assert serve.returncode == 2 and "config refused" in serve.stderr and "VLLM_KEY is not set" in serve.stderr
    assert not (tmp_path / "data").exists()


def test_a_readings_key_must_be_set_and_a_key_of_its_own() -> None:
    import hashlib

    digest = hashlib.sha256(b"sk-acme").hexdigest()
    readings = (
        "energy:\n  readings_keys:\n    - {name: gpu-host, key_env: GPU_KEY}\n    - {name: twin, key_env: TWIN}\n"
    )
    cfg = parse_config(BASE + f"  - {{tenant: acme, key_sha256: {digest}}}\n" + readings)
    unset, shared = environment_problems(cfg, {"VLLM_KEY": "up", "TWIN": "sk-acme"})
    assert "energy.readings_keys.0.key_env: GPU_KEY is not set" in unset and "key_optional" in unset
    assert "energy.readings_keys.1" in shared and "'acme'" in shared and "sk-acme" not in shared
    optional_key = "energy:\n  readings_keys: [{name: gpu-host, key_env: GPU_KEY, key_optional: true}]\n"
    optional = parse_config(BASE + f"  - {{tenant: acme, key_sha256: {digest}}}\n" + optional_key)
    assert environment_problems(optional, {"VLLM_KEY": "up"}) == []
