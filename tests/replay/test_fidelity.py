"""`airlock replay check` against a real recorded data directory."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
from click.testing import CliRunner

from airlock.cli.main import cli
from airlock.replay.fidelity import check_span
from airlock.store.embedded import BlobCorrupt
from helpers import API_KEY, Gateway, Sim, wait_recorded, write_config

CALL = {"id": "call_1", "type": "function", "function": {"name": "kubectl_get", "arguments": "{}"}}


def span(**extra: object) -> dict:
    return {
        "span_id": "s1",
        "kind": "model.chat",
        "gen_ai.request.model": "m",
        "status": "ok",
        "airlock.payload.upstream_request": "d1",
        **extra,
    }


def body(messages: list, **extra: object) -> bytes:
    return orjson.dumps({"model": "m", "messages": messages, **extra})


def test_what_blocks_a_replay() -> None:
    answered = body(
        [
            {"role": "user", "content": "pods?"},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"items": []}'},
        ],
        seed=1,
    )
    assert check_span(span(), {"d1": answered}).replayable
    unanswered = body(
        [
            {"role": "user", "content": "pods?"},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "user", "content": "well?"},
        ]
    )
    result = check_span(span(), {"d1": unanswered})
    assert result.missing == ["the result of tool call call_1 (kubectl_get) was never seen"]
    orphan = body([{"role": "tool", "tool_call_id": "call_9", "content": "x"}])
    assert "never made" in check_span(span(), {"d1": orphan}).missing[0]
    assert "not in the blob store" in check_span(span(), {}).missing[0]
    assert "corrupt" in check_span(span(), {"d1": BlobCorrupt("bad")}).missing[0]
    assert "does not parse" in check_span(span(), {"d1": b"{nope"}).missing[0]
    named = check_span(span(**{"airlock.prompt.name": "triage"}), {"d1": answered})
    assert named.missing == ["prompt 'triage' was named without a version"]


def test_seed_and_temperature_are_caveats_not_blockers() -> None:
    sampled = check_span(span(), {"d1": body([{"role": "user", "content": "x"}], temperature=0.7)})
    assert sampled.replayable and "without a seed" in sampled.caveats[0]
    greedy = check_span(span(), {"d1": body([{"role": "user", "content": "x"}], temperature=0)})
    assert greedy.caveats == ["no seed"]


def test_replay_check_command(tmp_path: Path, sims: dict[str, Sim]) -> None:
    gw = Gateway(write_config(tmp_path, {"sim-eu": sims["sim-eu"]}))
    auth = {"Authorization": f"Bearer {API_KEY}"}
    try:
        good = {
            "model": "chat",
            "seed": 3,
            "messages": [
                {"role": "user", "content": "list pods"},
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": '{"items": ["api-7f9c"]}'},
            ],
        }
        bad = {
            "model": "chat",
            "messages": [
                {"role": "user", "content": "list pods"},
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "user", "content": "and?"},
            ],
        }
        for b in (good, bad):
            assert httpx.post(f"{gw.url}/v1/chat/completions", json=b, headers=auth).status_code == 200
        wait_recorded(gw.data_dir, 2)
    finally:
        gw.stop()
    result = CliRunner().invoke(cli, ["replay", "check", "-d", str(gw.data_dir), "--json"])
    assert result.exit_code == 0, result.output
    doc = orjson.loads(result.output)
    assert (doc["traces"], doc["replayable"], doc["replayable_fraction"]) == (2, 1, 0.5)
    not_ok = next(r for r in doc["results"] if not r["replayable"])
    assert "call_1 (kubectl_get) was never seen" in not_ok["missing"][0]
    table = CliRunner().invoke(cli, ["replay", "check", "-d", str(gw.data_dir)], env={"COLUMNS": "200"})
    assert "1 of 2 traces replayable" in table.output and "replayable fraction: 0.500" in table.output
    none = CliRunner().invoke(cli, ["replay", "check", "-d", str(gw.data_dir), "--tenant", "nobody"])
    assert none.exit_code == 1 and "no traces match" in none.output
