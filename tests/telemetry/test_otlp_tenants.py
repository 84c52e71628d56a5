"""Tenant isolation of the record on a real gateway: tenant B (globex) sends OTLP spans, and makes a model
call, under a trace id of tenant A (acme), claiming acme in airlock.* attributes; an unauthenticated call
names the same trace. A's view of its trace (`traces list|show --tenant acme`) does not change."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner

from airlock.cli.main import cli
from helpers import API_KEY, OTHER_KEY, Gateway, Sim, wait_recorded, write_config

TRACE = "5a" * 16
A_ROOT = "a1" * 8
B_SPAN = "b2" * 8
FORGED = [
    {"key": "airlock.tenant", "value": {"stringValue": "acme"}},
    {"key": "Airlock.Task", "value": {"stringValue": "acme-task"}},
]


def b_payload() -> dict[str, Any]:
    """An error span of B's in A's trace, an hour long, with many tokens, claiming to be acme's."""
    span = {
        "traceId": TRACE,
        "spanId": B_SPAN,
        "parentSpanId": A_ROOT,
        "name": "injected",
        "startTimeUnixNano": "1000000000000000000",
        "endTimeUnixNano": "4000000000000000000",
        "attributes": [{"key": "gen_ai.usage.input_tokens", "value": {"intValue": "99999"}}, *FORGED],
        "status": {"code": 2, "message": "B was here"},
    }
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "b-app"}}, *FORGED]}
    return {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [span]}]}]}


@pytest.fixture(scope="module")
def gw(sims: dict[str, Sim], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(write_config(tmp_path_factory.mktemp("tenants"), sims))
    chat = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    traceparent = {"traceparent": f"00-{TRACE}-{A_ROOT}-01"}
    r = httpx.post(
        f"{g.url}/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {API_KEY}", **traceparent}
    )
    assert r.status_code == 200, r.text
    wait_recorded(g.data_dir, 1, where=f"trace_id = '{TRACE}'")
    r = httpx.post(f"{g.url}/v1/traces", json=b_payload(), headers={"Authorization": f"Bearer {OTHER_KEY}"})
    assert r.status_code == 200, r.text
    r = httpx.post(
        f"{g.url}/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {OTHER_KEY}", **traceparent}
    )
    assert r.status_code == 200, r.text
    r = httpx.post(f"{g.url}/v1/chat/completions", json=chat, headers={"Authorization": "Bearer forged", **traceparent})
    assert r.status_code == 401
    wait_recorded(g.data_dir, 3, where=f"trace_id = '{TRACE}' AND \"airlock.tenant\" IS NOT NULL")
    yield g
    g.stop()


def cli_json(*args: str) -> Any:
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return orjson.loads(result.output)


def test_other_tenants_spans_do_not_change_a_trace_listing(gw: Gateway) -> None:
    a_span = wait_recorded(gw.data_dir, 1, where=f"trace_id = '{TRACE}' AND \"airlock.tenant\" = 'acme'")[0]
    rows = cli_json("traces", "list", "-d", str(gw.data_dir), "--tenant", "acme")
    assert len(rows) == 1
    row = rows[0]
    assert row["trace_id"] == TRACE and row["tenant"] == "acme"
    assert row["spans"] == 1 and row["errors"] == 0
    assert row["input_tokens"] == a_span["gen_ai.usage.input_tokens"]
    assert (row["start_ns"], row["end_ns"]) == (a_span["start_ns"], a_span["end_ns"])
    b_rows = cli_json("traces", "list", "-d", str(gw.data_dir), "--tenant", "globex")
    assert [(r["trace_id"], r["spans"], r["errors"]) for r in b_rows] == [(TRACE, 2, 1)]  # B sees its own two
    everyone = cli_json("traces", "list", "-d", str(gw.data_dir), "--attr", f"trace_id={TRACE}")
    assert everyone[0]["tenant"] == "acme,globex"  # the operator's view says the id is shared


def test_other_tenants_spans_are_not_in_a_trace_show(gw: Gateway) -> None:
    shown = cli_json("traces", "show", TRACE, "-d", str(gw.data_dir), "--tenant", "acme")
    assert [s["airlock.tenant"] for s in shown["spans"]] == ["acme"]
    assert {h["span_id"] for h in shown["hops"]} == {shown["spans"][0]["span_id"]}
    result = CliRunner().invoke(cli, ["traces", "show", B_SPAN, "-d", str(gw.data_dir), "--tenant", "acme"])
    assert result.exit_code != 0 and "no single trace" in result.output  # B's span id does not lead A there


def test_a_sender_cannot_claim_a_tenant_in_attributes(gw: Gateway) -> None:
    row = wait_recorded(gw.data_dir, 1, where=f"span_id = '{B_SPAN}'")[0]
    assert row["airlock.tenant"] == "globex"  # from the bearer key
    attrs = dict(row["attributes"])
    assert "airlock.tenant" not in attrs and "Airlock.Task" not in attrs and attrs["service.name"] == "b-app"
    assert attrs["airlock.otlp.refused_attributes"] == "Airlock.Task,airlock.tenant"
    assert row["airlock.task"] is None


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Basic " + OTHER_KEY, OTHER_KEY, "Bearer " + OTHER_KEY + "x", "Bearer " + "k" * 6000],
    ids=["none", "empty", "no-key", "basic", "no-scheme", "near-miss", "oversized"],
)
def test_a_missing_or_forged_key_records_nothing_as_anyone(gw: Gateway, authorization: str | None) -> None:
    span_id = hashlib.sha256((authorization or "-").encode()).hexdigest()[:16]
    headers = {} if authorization is None else {"Authorization": authorization}
    r = httpx.post(f"{gw.url}/v1/traces", json=json_span(span_id), headers=headers)
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json"), r.text
    rid = r.headers["x-request-id"]
    refusal = wait_recorded(gw.data_dir, 1, where=f"request_id = '{rid}'")[0]
    assert refusal["kind"] == "gateway.reject" and refusal["airlock.tenant"] is None
    assert wait_recorded(gw.data_dir, 0, where=f"span_id = '{span_id}'") == []


def test_markup_in_a_span_comes_back_as_json_text(gw: Gateway) -> None:
    """The one HTTP answer that echoes recorded text (OTLP's partial success) is JSON, never markup."""
    payload = json_span("0" * 16, name="<script>alert(1)</script>[/bold]")
    r = httpx.post(f"{gw.url}/v1/traces", json=payload, headers={"Authorization": f"Bearer {OTHER_KEY}"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert "<script>alert(1)</script>[/bold]" in r.json()["partialSuccess"]["errorMessage"]


def json_span(span_id: str, name: str = "probe") -> dict[str, Any]:
    span = {"traceId": TRACE, "spanId": span_id, "name": name, "startTimeUnixNano": "1", "endTimeUnixNano": "2"}
    return {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
