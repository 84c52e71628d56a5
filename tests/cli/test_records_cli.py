"""`airlock traces list|show`, `airlock blob`, `airlock status` against a real recorded data directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from click.testing import CliRunner

from airlock.cli.main import cli
from helpers import API_KEY, Gateway, Sim, wait_recorded, write_config


@pytest.fixture(scope="module")
def recorded(sims: dict[str, Sim], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(write_config(tmp_path_factory.mktemp("cli"), sims))
    headers = {
        "Authorization": f"Bearer {API_KEY}",
        "traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01",
        "x-airlock-task": "deploy-42",
        "x-airlock-attr-team": "payments",
    }
    for content in ("first", "second"):
        httpx.post(
            f"{gw.url}/v1/chat/completions",
            headers=headers,
            json={"model": "chat", "messages": [{"role": "user", "content": content}]},
        )
    httpx.post(f"{gw.url}/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"}, content=b"{bad")
    wait_recorded(gw.data_dir, 3)
    yield gw
    gw.stop()


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_traces_list_filters(recorded: Gateway) -> None:
    d = str(recorded.data_dir)
    rows = orjson.loads(run("traces", "list", "-d", d, "--json"))
    assert len(rows) == 2
    task = orjson.loads(run("traces", "list", "-d", d, "--json", "--attr", "team=payments"))
    assert [r["trace_id"] for r in task] == ["ab" * 16] and task[0]["spans"] == 2 and task[0]["task"] == "deploy-42"
    assert orjson.loads(run("traces", "list", "-d", d, "--json", "--status", "error"))[0]["errors"] == 1
    assert orjson.loads(run("traces", "list", "-d", d, "--json", "--tenant", "nobody")) == []
    assert "no traces match" in run("traces", "list", "-d", d, "--model", "nothing")
    assert len(orjson.loads(run("traces", "list", "-d", d, "--json", "--since", "1h"))) == 2
    assert "deploy-42" in run("traces", "list", "-d", d)


def test_traces_show_and_blob(recorded: Gateway) -> None:
    d = str(recorded.data_dir)
    out = run("traces", "show", "-d", d, "abab")
    assert out.count("model.chat") == 2 and "sim-eu" in out and "sent upstream" in out and '"first"' in out
    spans = orjson.loads(run("traces", "show", "-d", d, "abab", "--json"))["spans"]
    digest = spans[0]["airlock.payload.upstream_request"]
    result = CliRunner().invoke(cli, ["blob", "-d", d, digest[:12]])
    assert result.exit_code == 0 and orjson.loads(result.stdout_bytes)["messages"][0]["content"] == "first"


def test_status_shows_the_live_worker(recorded: Gateway) -> None:
    out = run("status", "-d", str(recorded.data_dir))
    assert "yes" in out and "dropped" in out


def test_unknown_trace_is_a_clear_error(recorded: Gateway) -> None:
    result = CliRunner().invoke(cli, ["traces", "show", "-d", str(recorded.data_dir), "ffffffff"])
    assert result.exit_code == 2 and "no single trace" in result.output


def test_missing_data_dir(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["traces", "list", "-d", str(tmp_path / "none")])
    assert result.exit_code == 2 and "no data directory" in result.output


MARKUP = "[/bold] [red]x[/red] [link=http://evil.example]click[/link]"


def test_recorded_markup_is_printed_as_it_is_and_never_parsed(tmp_path: Path, sims: dict[str, Sim]) -> None:
    gw = Gateway(write_config(tmp_path, sims))
    try:
        trace = "ef" * 16
        span = {
            "traceId": trace,
            "spanId": "12" * 8,
            "name": "tool",
            "startTimeUnixNano": "1700000000000000000",
            "endTimeUnixNano": "1700000000100000000",
            "status": {"code": 2, "message": MARKUP},
            "attributes": [{"key": "note", "value": {"stringValue": MARKUP}}],
        }
        doc = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [span]}]}]}
        headers = {"Authorization": f"Bearer {API_KEY}", "x-airlock-task": MARKUP}
        r = httpx.post(f"{gw.url}/v1/traces", json=doc, headers=headers)
        assert r.status_code == 200, r.text
        chat = {"model": "chat", "messages": [{"role": "user", "content": MARKUP}]}
        headers["traceparent"] = f"00-{trace}-{'34' * 8}-01"
        assert httpx.post(f"{gw.url}/v1/chat/completions", json=chat, headers=headers).status_code == 200
        wait_recorded(gw.data_dir, 2, where=f"trace_id = '{trace}'")
        d = str(gw.data_dir)
        shown = run("traces", "show", "-d", d, trace[:12], "--tenant", "acme")
        assert shown.count(MARKUP) >= 2  # the status message and the attribute, literally
        listed = run("traces", "list", "-d", d)
        assert "[/bold]" in listed  # the task column
    finally:
        gw.stop()
