"""Which recorded traces `replay check` and `replay run` take: a time window whole unless --limit is
given, the newest --limit otherwise, and a selection that was cut says so. And the run repository's
compare-and-set, so two runners never run one name."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
import yaml
from click.testing import CliRunner

from airlock.cli.main import cli
from airlock.config import load_config
from airlock.errors import StoreConflict, StoreUnavailable
from airlock.replay.runner import ReplayError, ReplayRunner, _claim_is_stale
from airlock.store.embedded import DataDir
from airlock.store.embedded.replay import SQLiteReplayRuns
from airlock.store.interface import TraceFilter
from airlock.store.replay import NewReplayRun
from helpers import API_KEY, Gateway, Sim, wait_recorded, write_config

TRACES = 33  # more than the default --limit of 30


@pytest.fixture(scope="module")
def window(tmp_path_factory: pytest.TempPathFactory, sims: dict[str, Sim]) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("selection")
    gw = Gateway(write_config(tmp, {"sim-eu": sims["sim-eu"]}))
    try:
        with httpx.Client(headers={"Authorization": f"Bearer {API_KEY}"}) as client:
            for i in range(TRACES):
                body = {"model": "chat", "seed": 1, "messages": [{"role": "user", "content": f"q{i}"}]}
                assert client.post(f"{gw.url}/v1/chat/completions", json=body).status_code == 200
        wait_recorded(gw.data_dir, TRACES)
    finally:
        gw.stop()
    # The replay's config: the same data directory, plus a candidate nobody listens for (port 9), so a
    # run creates its items and then stops at the probe.
    cfg = yaml.safe_load(gw.config.read_text())
    cfg["upstreams"].append(
        {
            "name": "dead",
            "base_url": "http://127.0.0.1:9/v1",
            "region": "nowhere-1",
            "jurisdiction": "EU",
            "deployment": "simulator",
            "models": [{"name": "dead-large"}],
        }
    )
    replay_cfg = tmp / "replay.yaml"
    replay_cfg.write_text(yaml.safe_dump(cfg))
    return {"data": gw.data_dir, "config": replay_cfg}


def check(data: Path, *args: str) -> dict:
    result = CliRunner().invoke(cli, ["replay", "check", "-d", str(data), "--json", *args])
    assert result.exit_code == 0, result.output
    return dict(orjson.loads(result.output))


def test_replay_check_takes_a_time_window_whole(window: dict[str, Path]) -> None:
    doc = check(window["data"], "--since", "1h")
    assert (doc["traces"], doc["replayable"]) == (TRACES, TRACES)
    assert (doc["matched"], doc["cut"]) == (TRACES, False)
    limited = check(window["data"], "--since", "1h", "--limit", "5")
    assert (limited["traces"], limited["matched"], limited["cut"]) == (5, TRACES, True)


def test_replay_check_says_when_the_default_limit_cuts_the_selection(window: dict[str, Path]) -> None:
    table = CliRunner().invoke(cli, ["replay", "check", "-d", str(window["data"])], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert f"newest 30 of {TRACES} traces; --limit N or --all for more" in table.output
    assert check(window["data"], "--all")["traces"] == TRACES
    both = CliRunner().invoke(cli, ["replay", "check", "-d", str(window["data"]), "--all", "--limit", "3"])
    assert both.exit_code == 2 and "not both" in both.output


def items_of(data: Path, name: str) -> int:
    runs = SQLiteReplayRuns(DataDir.at(data))
    try:
        return len(runs.items(name))
    finally:
        runs.close()


def test_replay_run_since_takes_the_whole_window(window: dict[str, Path]) -> None:
    args = ["replay", "run", "-c", str(window["config"]), "--target", "dead-large"]
    result = CliRunner().invoke(cli, [*args, "--since", "1h", "--name", "since-run"])
    assert result.exit_code == 1 and "unreachable" in result.output  # after the run was created
    assert items_of(window["data"], "since-run") == TRACES
    cut = CliRunner().invoke(cli, [*args, "--name", "default-run"])
    assert f"newest 30 of {TRACES} traces; --limit N or --all for more" in cut.output
    assert items_of(window["data"], "default-run") == 30


def test_a_run_held_by_a_live_runner_is_not_run_twice(window: dict[str, Path]) -> None:
    config = load_config(window["config"])
    first = ReplayRunner(config, "held-run", "dead-large")
    pending = first.prepare(TraceFilter(limit=2))
    runs = SQLiteReplayRuns(DataDir.at(window["data"]))
    try:
        assert runs.claim("held-run", first.owner, None)  # as if `first` were running it now
        second = ReplayRunner(config, "held-run", "dead-large")
        assert second.prepare(TraceFilter(limit=2)) == pending
        with pytest.raises(ReplayError, match="is being run by"):
            asyncio.run(second.run(pending))
        run = runs.load("held-run")
        assert run is not None and run.claimed_by == first.owner  # the loser changed nothing
    finally:
        runs.close()


def test_run_repository_compare_and_set(tmp_path: Path) -> None:
    runs = SQLiteReplayRuns(DataDir.at(tmp_path))
    try:
        new = NewReplayRun("r", "cand", {"limit": 2}, {"on_divergence": "stop"}, ["t1", "t2"])
        runs.create(new)
        with pytest.raises(StoreConflict):
            runs.create(new)
        assert runs.claim("r", "a", None)
        assert not runs.claim("r", "b", None)  # a holds it
        with pytest.raises(StoreConflict):
            runs.save_item("r", "b", "t1", "done", {})
        assert runs.claim("r", "b", "a")  # taken over from a, named as the holder it replaces
        runs.save_item("r", "b", "t1", "done", {"diverged_at": 0})
        runs.save_item("r", "b", "t2", "skipped", {"reason": "x"})
        counts = runs.counts("r")
        assert (counts.done, counts.diverged, counts.skipped, counts.pending) == (1, 1, 1, 0)
        runs.finish("r", "b")
        run = runs.load("r")
        assert run is not None and run.finished_at is not None and run.claimed_by is None
        assert run.options == {"on_divergence": "stop"} and [i.status for i in runs.items("r")] == ["done", "skipped"]
    finally:
        runs.close()


def test_a_dead_runners_claim_is_stale() -> None:
    import socket

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    host = socket.gethostname()
    assert _claim_is_stale(f"{host}/{int(gone.stdout)}/x", None)
    assert not _claim_is_stale(f"{host}/{os.getpid()}/x", None)


def test_a_state_database_that_cannot_be_opened_is_a_store_error(tmp_path: Path) -> None:
    data = DataDir.at(tmp_path)
    data.state_db.parent.mkdir(parents=True, exist_ok=True)
    data.state_db.mkdir()  # a folder where the database file should be
    with pytest.raises(StoreUnavailable, match="opening the state database"):
        SQLiteReplayRuns(data)
