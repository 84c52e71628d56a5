"""`airlock replay run` and `report`: recorded traffic replayed against a candidate that answers
differently, turn by turn, with recorded tool results, itself recorded and linked to the originals."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import orjson
import pytest
import yaml
from click.testing import CliRunner

from airlock.cli.main import cli
from airlock.config import load_config
from airlock.record.ids import new_span_id, new_trace_id
from airlock.replay.report import build_report, wilson
from airlock.replay.runner import ReplayError, ReplayRunner
from airlock.store import embedded_stores
from airlock.store.embedded import DataDir, DuckDBSpanReader
from airlock.store.interface import TraceFilter
from helpers import API_KEY, Gateway, Sim, wait_recorded, write_config

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "kubectl_get",
            "parameters": {"type": "object", "properties": {"namespace": {"type": "string"}}},
        },
    }
]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("replay")
    original, candidate = Sim("eu-west-1"), Sim("cand-1", "--style", "terse", "--no-tools")
    tool_user = Sim("cand-2", "--style", "terse")  # answers differently, but calls the same tools
    cfg_path = write_config(tmp, {"sim-eu": original})
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["upstreams"][0]["models"][0]["prices"] = [{"input_per_mtok": 1.0, "output_per_mtok": 2.0}]
    cfg["upstreams"].append(
        {
            "name": "sim-cand",
            "base_url": f"{candidate.url}/v1",
            "region": "cand-1",
            "jurisdiction": "EU",
            "deployment": "simulator",
            "models": [
                {
                    "name": "cand-large",
                    "upstream_model": "sim-large",
                    "unsupported_params": ["seed"],
                    "prices": [{"input_per_mtok": 10.0, "output_per_mtok": 20.0}],
                }
            ],
        }
    )
    cfg["upstreams"].append(
        {
            "name": "sim-cand-tools",
            "base_url": f"{tool_user.url}/v1",
            "region": "cand-2",
            "jurisdiction": "EU",
            "deployment": "simulator",
            "models": [{"name": "tools-large", "upstream_model": "sim-large"}],
        }
    )
    cfg["replay"] = {"judge": "sim-small"}  # served by the local simulator
    cfg_path.write_text(yaml.safe_dump(cfg))
    gw = Gateway(cfg_path)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    try:
        spoof = httpx.post(
            f"{gw.url}/v1/chat/completions",
            headers={**auth, "x-airlock-replay-run": "fake"},
            json={"model": "chat", "messages": [{"role": "user", "content": "am I a replay?"}]},
        )
        assert spoof.status_code == 200
        for i in range(3):  # single-turn questions
            r = httpx.post(
                f"{gw.url}/v1/chat/completions",
                headers=auth,
                json={"model": "chat", "seed": 7, "messages": [{"role": "user", "content": f"question {i}"}]},
            )
            assert r.status_code == 200
        schema = {
            "type": "object",
            "required": ["severity"],
            "properties": {"severity": {"type": "string", "enum": ["low", "high"]}, "summary": {"type": "string"}},
        }
        r = httpx.post(
            f"{gw.url}/v1/chat/completions",
            headers=auth,
            json={
                "model": "chat",
                "messages": [{"role": "user", "content": "classify: disk full"}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "triage", "schema": schema}},
            },
        )
        assert r.status_code == 200
        trace, parent = new_trace_id(), new_span_id()  # one agent task of two turns
        headers = {**auth, "traceparent": f"00-{trace}-{parent}-01"}
        messages = [{"role": "user", "content": "which pods crash?"}]
        first = httpx.post(
            f"{gw.url}/v1/chat/completions",
            headers=headers,
            json={"model": "chat", "tools": TOOLS, "messages": messages},
        ).json()
        call = first["choices"][0]["message"]["tool_calls"][0]
        messages += [
            first["choices"][0]["message"],
            {"role": "tool", "tool_call_id": call["id"], "content": '{"items": ["worker-2"]}'},
        ]
        second = httpx.post(
            f"{gw.url}/v1/chat/completions",
            headers=headers,
            json={"model": "chat", "tools": TOOLS, "messages": messages},
        )
        assert second.status_code == 200
        wait_recorded(gw.data_dir, 7)
    finally:
        gw.stop()
    yield {
        "config": cfg_path,
        "agent_trace": trace,
        "data": gw.data_dir,
        "candidate": candidate,
        "original": original,
        "tool_user": tool_user,
    }
    original.stop()
    candidate.stop()
    tool_user.stop()


def test_replay_against_a_different_model(recorded: dict) -> None:
    config = load_config(recorded["config"])
    runner = ReplayRunner(config, "cand-run", "cand-large")
    pending = runner.prepare(TraceFilter(limit=100))
    assert len(pending) == 6  # a client cannot mark its own call as a replay: the spoofed one is selected
    progress = asyncio.run(runner.run(pending))
    assert (progress.done, progress.failed, progress.skipped) == (6, 0, 0)
    assert progress.diverged == 1  # the agent: the original called a tool, the candidate answered in text
    report = build_report(embedded_stores(str(recorded["data"])), "cand-run")
    assert report.items == {"done": 6}
    assert report.exact.n == 7 and report.exact.hits == 0  # terse answers never equal the recorded ones
    assert report.schema_valid.n == 1 and report.schema_valid.hits == 1
    # The local judge compared every pair of text answers (not the turn where the original called a tool).
    assert sum(report.judge.values()) == 6 and set(report.judge) <= {"candidate", "recorded", "tie"}
    assert report.judge_rationales
    assert report.tool_agreement.hits == 0 and report.tool_agreement.n == 1  # turn 2 is text on both sides
    assert report.tool_results_identical.n == 1 and report.tool_results_identical.hits == 1
    assert report.dropped_params == {"seed": 3}
    lat_mean, lat_lo, lat_hi = report.deltas["latency_ms"]  # from the gateway's own spans on both sides
    assert lat_lo <= lat_mean <= lat_hi
    mean, lo, hi = report.deltas["cost_usd"]  # ten times the price: every call costs more
    assert mean > 0 and lo <= mean <= hi
    agent = next(t for t in report.traces if t["trace_id"] == recorded["agent_trace"])
    assert agent["diverged_at"] == 0 and agent["turns"] == 2  # on-divergence continue: the recorded next turn
    # The replay is recorded, tagged and linked to the originals.
    reader = DuckDBSpanReader(DataDir.at(recorded["data"]))
    replays = reader.sql(
        'SELECT "airlock.replay.of" AS of, "airlock.upstream" AS up FROM spans'
        " WHERE \"airlock.replay.run\" = 'cand-run'"
    )
    originals = {r["span_id"] for r in reader.sql('SELECT span_id FROM spans WHERE "airlock.replay.run" IS NULL')}
    candidate_calls = [r for r in replays if r["up"] == "sim-cand"]
    assert len(candidate_calls) == 7 and {r["of"] for r in replays} <= originals
    assert {r["up"] for r in replays} == {"sim-cand", "sim-eu"}  # sim-eu served the judge
    # Resuming a finished run replays nothing again.
    again = ReplayRunner(config, "cand-run", "cand-large")
    assert again.prepare(TraceFilter(limit=100)) == []


def test_report_command_and_html(recorded: dict, tmp_path: Path) -> None:
    html_path = tmp_path / "r.html"
    result = CliRunner().invoke(
        cli,
        ["replay", "report", "-d", str(recorded["data"]), "cand-run", "--html", str(html_path)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "exact match" in result.output and "where the candidate diverged" in result.output
    page = html_path.read_text()
    assert "<table>" in page and "http" not in page.split("<body>")[1]  # self-contained
    doc = orjson.loads(
        CliRunner().invoke(cli, ["replay", "report", "-d", str(recorded["data"]), "cand-run", "--json"]).output
    )
    assert doc["traces_diverged"]["hits"] == 1 and len(doc["exact_match"]["ci95"]) == 2


def test_stop_on_divergence_and_bad_input(recorded: dict) -> None:
    config = load_config(recorded["config"])
    stopper = ReplayRunner(config, "stop-run", "cand-large", on_divergence="stop")
    asyncio.run(stopper.run(stopper.prepare(TraceFilter(trace_id=recorded["agent_trace"]))))
    agent = build_report(embedded_stores(str(recorded["data"])), "stop-run").traces[0]
    assert agent["diverged_at"] == 0 and agent["turns"] == 1
    with pytest.raises(ReplayError, match="matches no recorded traces"):
        ReplayRunner(config, "empty", "cand-large").prepare(TraceFilter(tenant="nobody"))
    with pytest.raises(ReplayError, match="no route or upstream serves"):
        r = ReplayRunner(config, "bad-target", "gpt-17")
        asyncio.run(r.run(r.prepare(TraceFilter(limit=1))))


def test_unreachable_target_fails_fast(recorded: dict, tmp_path: Path) -> None:
    cfg = yaml.safe_load(recorded["config"].read_text())
    cand = next(u for u in cfg["upstreams"] if u["name"] == "sim-cand")
    cand["base_url"] = "http://127.0.0.1:9/v1"  # nothing listens on port 9
    path = tmp_path / "dead.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runner = ReplayRunner(load_config(path), "dead-run", "cand-large")
    with pytest.raises(ReplayError, match="unreachable"):
        asyncio.run(runner.run(runner.prepare(TraceFilter(limit=1))))


def test_wilson_interval() -> None:
    lo, hi = wilson(8, 10)
    assert 0.49 < lo < 0.5 and 0.94 < hi < 0.95  # the textbook values for 8 of 10


def test_a_candidate_that_calls_the_same_tools_gets_the_recorded_results(recorded: dict) -> None:
    config = load_config(recorded["config"])
    runner = ReplayRunner(config, "tools-run", "tools-large")
    asyncio.run(runner.run(runner.prepare(TraceFilter(trace_id=recorded["agent_trace"]))))
    report = build_report(embedded_stores(str(recorded["data"])), "tools-run")
    assert report.tool_agreement.n == 1 and report.tool_agreement.hits == 1
    assert report.diverged.hits == 0 and report.traces[0]["turns"] == 2
    assert report.tool_results_identical.hits == report.tool_results_identical.n == 1


def test_failed_traces_are_retried_when_the_run_resumes(recorded: dict) -> None:
    config = load_config(recorded["config"])
    sim = recorded["tool_user"]
    sim.set(error_rate=1.0, error_kinds=["503"])
    try:
        first = ReplayRunner(config, "flaky-run", "tools-large")
        progress = asyncio.run(first.run(first.prepare(TraceFilter(limit=2))))
        assert progress.failed == 2 and progress.done == 0
    finally:
        sim.set(error_rate=0.0)
    second = ReplayRunner(config, "flaky-run", "tools-large")
    pending = second.prepare(TraceFilter(limit=2))
    assert len(pending) == 2  # the failed ones, again
    assert asyncio.run(second.run(pending)).done == 2
    assert build_report(embedded_stores(str(recorded["data"])), "flaky-run").items == {"done": 2}
    with pytest.raises(ReplayError, match="on-divergence"):
        ReplayRunner(config, "flaky-run", "tools-large", on_divergence="stop").prepare(TraceFilter(limit=2))


def test_mean_interval_uses_students_t() -> None:
    from airlock.replay.report import mean_ci

    mean, lo, hi = mean_ci([1.0, 3.0])
    assert mean == 2.0 and round(lo, 1) == -10.7 and round(hi, 1) == 14.7


COUNTS = re.compile(r"(\d+) traces replayed, (\d+) diverged, (\d+) failed, (\d+) skipped")


def test_a_finished_run_named_again_prints_the_first_runs_counts(recorded: dict) -> None:
    args = ["replay", "run", "-c", str(recorded["config"]), "--target", "cand-large", "--name", "cli-run"]
    first = CliRunner().invoke(cli, [*args, "--limit", "100"])
    assert first.exit_code == 0, first.output
    counted = COUNTS.search(first.output)
    assert counted is not None and counted.group(2) == "1"  # the agent trace diverged
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    recount = COUNTS.search(again.output)
    assert recount is not None and recount.groups() == counted.groups()
    assert "cli-run was already finished" in again.output


def test_report_html_into_a_missing_folder_creates_it(recorded: dict, tmp_path: Path) -> None:
    page = tmp_path / "not" / "yet" / "r.html"
    result = CliRunner().invoke(cli, ["replay", "report", "-d", str(recorded["data"]), "cand-run", "--html", str(page)])
    assert result.exit_code == 0, result.output
    assert result.exception is None and "<table>" in page.read_text()
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    refused = CliRunner().invoke(
        cli, ["replay", "report", "-d", str(recorded["data"]), "cand-run", "--html", str(blocked / "r.html")]
    )
    assert refused.exit_code == 2 and "cannot write" in refused.output
    assert not isinstance(refused.exception, OSError)


def test_zz_a_corrupt_payload_is_reported_and_skipped(recorded: dict) -> None:
    """Runs last in this module: it damages the recorded packs."""
    for pack in (recorded["data"] / "blobs").glob("*.pack"):
        raw = bytearray(pack.read_bytes())
        for i in range(40, len(raw), 97):  # flip bytes all through every frame
            raw[i] ^= 0x5A
        pack.write_bytes(bytes(raw))
    runner = ReplayRunner(load_config(recorded["config"]), "after-damage", "cand-large")
    progress = asyncio.run(runner.run(runner.prepare(TraceFilter(limit=100))))
    assert progress.done == 0 and progress.skipped >= 1
    skipped = [
        t
        for t in build_report(embedded_stores(str(recorded["data"])), "after-damage").traces
        if t["status"] == "skipped"
    ]
    assert all(
        "corrupt" in " ".join(t.get("missing", [])) or "not in the blob" in " ".join(t.get("missing", []))
        for t in skipped
    )
    assert any("corrupt" in " ".join(t.get("missing", [])) for t in skipped)
