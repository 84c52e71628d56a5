"""build_stores lays the server backends the store: section names over the embedded stores."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from airlock.config import parse_config
from airlock.errors import StoreUnavailable
from airlock.store import build_stores
from airlock.store.ledger import LedgerItemRecord

DIGEST = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"


def _config(tmp: Path, store: str = "") -> str:
    return f"""\
data_dir: {tmp / "data"}
node: {{name: eu-1, region: eu-west-1}}
upstreams:
  - {{name: u, base_url: "http://127.0.0.1:9/v1", region: eu-west-1, jurisdiction: EU, models: [{{name: m}}]}}
api_keys:
  - {{tenant: acme, key_sha256: {DIGEST}}}
{store}"""


def _item(item_id: str) -> LedgerItemRecord:
    return LedgerItemRecord(
        tenant="acme", item_id=item_id, category="tool_call", amount_usd=0.25, occurred_ns=10**18, request_sha="b" * 64
    )


def test_without_servers_every_concern_is_embedded(tmp_path: Path) -> None:
    stores = build_stores(parse_config(_config(tmp_path)))
    assert stores.backend == "embedded"
    assert type(stores.open_ledger_items()).__name__ == "SQLiteLedgerItems"


def test_postgres_holds_the_control_plane_for_every_node(tmp_path: Path, postgres_dsn: str) -> None:
    text = _config(tmp_path, "store:\n  postgres: {dsn_env: TEST_PG_DSN}\n")
    env = {"TEST_PG_DSN": postgres_dsn}
    first = build_stores(parse_config(text), environ=env)
    other = _config(tmp_path / "other", "store:\n  postgres: {dsn_env: TEST_PG_DSN}\n")
    second = build_stores(parse_config(other), environ=env)
    assert first.backend == "postgres"
    a, b = first.open_ledger_items(), second.open_ledger_items()
    try:
        assert a.insert_all([_item("i-1")]) == [True]
        assert b.insert_all([_item("i-1")]) == [False]  # the other node sees it: stored once
        assert [r.item_id for r in b.in_window(0, 2**62)] == ["i-1"]
    finally:
        a.close()
        b.close()


def test_an_unset_or_unreachable_backend_is_named(tmp_path: Path) -> None:
    text = _config(tmp_path, "store:\n  postgres: {dsn_env: TEST_PG_DSN}\n")
    with pytest.raises(StoreUnavailable, match="TEST_PG_DSN is not set"):
        build_stores(parse_config(text), environ={})
    dead = {"TEST_PG_DSN": f"host={tmp_path} port=1 user=nobody password=hunter2 connect_timeout=1"}
    with pytest.raises(StoreUnavailable) as e:
        build_stores(parse_config(text), environ=dead)
    assert "store.postgres (TEST_PG_DSN)" in e.value.detail and "hunter2" not in e.value.detail


def test_serve_refuses_to_start_naming_the_backend_it_cannot_reach(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    path = tmp_path / "airlock.yaml"
    path.write_text(_config(tmp_path, "store:\n  postgres: {dsn_env: TEST_PG_DSN}\n"))
    env = {**os.environ, "TEST_PG_DSN": f"host={tmp_path} port=1 user=nobody password=hunter2 connect_timeout=1"}
    done = subprocess.run(
        [sys.executable, "-m", "airlock", "serve", "-c", str(path), "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "cannot start: store.postgres (TEST_PG_DSN) cannot be used" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout


def test_a_cross_region_view_does_not_read_another_regions_embedded_record(tmp_path: Path, postgres_dsn: str) -> None:
    from click.testing import CliRunner

    from airlock.cli.main import cli

    regions = (
        "store:\n  regions:\n"
        "    eu-west-1: {postgres: {dsn_env: TEST_PG_DSN}}\n"
        "    us-east-1: {postgres: {dsn_env: TEST_PG_DSN}}\n"
    )
    path = tmp_path / "airlock.yaml"
    path.write_text(_config(tmp_path, regions))
    (tmp_path / "data").mkdir()
    runner = CliRunner()
    env = {"TEST_PG_DSN": postgres_dsn}
    own = runner.invoke(cli, ["cost", "report", "-c", str(path), "--regions", "eu-west-1", "--format", "json"], env=env)
    assert own.exit_code == 0, own.output
    assert orjson.loads(own.output)["by"][0] == "region"
    other = runner.invoke(cli, ["cost", "report", "-c", str(path), "--regions", "all"], env=env)
    assert other.exit_code == 2
    assert "region 'us-east-1' keeps its record on its own nodes" in other.output
    unknown = runner.invoke(cli, ["cost", "report", "-c", str(path), "--regions", "mars-1"], env=env)
    assert unknown.exit_code == 2 and "not under store.regions" in unknown.output


def test_compaction_reads_the_samplers_cursor_where_its_state_is(tmp_path: Path, postgres_dsn: str) -> None:
    from airlock.store.sampling import PassCommit

    text = _config(tmp_path, "store:\n  postgres: {dsn_env: TEST_PG_DSN}\n")
    stores = build_stores(parse_config(text), environ={"TEST_PG_DSN": postgres_dsn})
    state = stores.sampling.open_state()
    try:
        state.commit(
            PassCommit(
                pass_no=1,
                at_ns=10**18,
                cursors={"w1": 4},
                waiting={"w1": 4},
                changed={},
                removed=(),
                model={"pass": 1},
                stats={"spans_read": 0, "decided": 0, "kept": 0, "pending": 0, "skipped": 0},
            )
        )
        expected = state.decided_through("w1")
    finally:
        state.close()
    assert expected >= 0
    assert stores.sampling.retention.decided_through("w1") == expected  # not -1 from the unused local state file
