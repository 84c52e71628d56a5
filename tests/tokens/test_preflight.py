"""The pre-flight context check: unit cases, then through a real gateway."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from airlock.config import parse_config
from airlock.store.embedded import BlobReader, DataDir
from airlock.tokens import get_tokenizer
from airlock.tokens.chat import count_request
from airlock.tokens.preflight import ContextWindowExceeded, Preflight
from helpers import API_KEY, Gateway, Sim, wait_recorded, write_config
from tokens.texts import TEXTS

CONFIG = """\
upstreams:
  - name: u
    base_url: http://127.0.0.1:9/v1
    region: r
    jurisdiction: EU
    models: [{name: m, tokenizer: cl100k_base, context_window: 400}]
api_keys: [{tenant: t, key_env: K}]
tokens: {preflight: {mode: MODE, default_margin: 0.1}}
"""


def setup(mode: str) -> tuple[Preflight, object]:
    cfg = parse_config(CONFIG.replace("MODE", mode))
    return Preflight(cfg), cfg.upstreams[0].models[0]


def chat(turns: int, lang: str = "English") -> dict:
    messages = [{"role": "system", "content": "You are terse."}]
    for i in range(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": TEXTS[lang][i % 3]})
    return {"model": "m", "max_tokens": 50, "messages": messages}


def test_small_requests_are_not_even_counted() -> None:
    pf, spec = setup("reject")
    body = chat(1)
    assert not pf.may_exceed(spec, "m", body, len(orjson.dumps(body)))
    assert pf.checked == 0


def test_reject_says_by_how_much() -> None:
    pf, spec = setup("reject")
    body = chat(20, "Japanese")
    assert pf.may_exceed(spec, "m", body, len(orjson.dumps(body)))
    local = count_request(get_tokenizer("cl100k_base"), body)
    with pytest.raises(ContextWindowExceeded) as e:
        pf.check(spec, "m", body)
    estimate = -(-local * 11 // 10)  # ceil(local * 1.1)
    assert e.value.extra["local"] == local and e.value.extra["estimate"] == estimate
    assert e.value.extra["over_by"] == estimate + 50 - 400 and e.value.extra["script"] == "Hiragana/Katakana"
    assert "over m's context window of 400" in e.value.detail


def test_calibrated_margin_is_used() -> None:
    pf, spec = setup("reject")
    body = chat(3)
    local = count_request(get_tokenizer("cl100k_base"), body)
    assert local * 1.1 + 50 <= 400  # fits with the default margin
    assert pf.check(spec, "m", body).decision["margin_source"] == "default"
    pf.calibration.set("m", "Latin", 400 / local)  # learned: this provider bills far more than we count
    with pytest.raises(ContextWindowExceeded) as e:
        pf.check(spec, "m", body)
    assert e.value.extra["margin_source"] == "calibrated" and e.value.extra["estimate"] >= local + 400


def test_truncate_drops_the_oldest_turns_and_keeps_system_and_last() -> None:
    pf, spec = setup("truncate")
    body = chat(21)
    verdict = pf.check(spec, "m", body)
    assert verdict.body is not None and verdict.decision["verdict"] == "truncated"
    kept = verdict.body["messages"]
    assert kept[0] == body["messages"][0] and kept[-1] == body["messages"][-1]
    assert len(kept) == len(body["messages"]) - verdict.decision["dropped_messages"]
    assert verdict.decision["estimate_after"] + 50 <= 400


def test_through_the_gateway(tmp_path: Path, sims: dict[str, Sim]) -> None:
    gw = Gateway(
        write_config(
            tmp_path,
            {"sim-eu": sims["sim-eu"]},
            model_extra={"context_window": 400},
            tokens={"preflight": {"mode": "reject"}},
        )
    )
    auth = {"Authorization": f"Bearer {API_KEY}"}
    try:
        ok = httpx.post(f"{gw.url}/v1/chat/completions", headers=auth, json={**chat(1), "model": "chat"})
        assert ok.status_code == 200
        r = httpx.post(f"{gw.url}/v1/chat/completions", headers=auth, json={**chat(20, "Korean"), "model": "chat"})
        assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json")
        problem = r.json()
        assert problem["type"].endswith("context-window-exceeded") and problem["over_by"] > 0
        assert problem["window"] == 400 and problem["script"] == "Hangul"
        row = wait_recorded(gw.data_dir, 1, where=f"request_id = '{r.headers['x-request-id']}'")[0]
        assert row["error_type"] == "context-window-exceeded"
        decisions = {d["kind"]: d for d in orjson.loads(row["airlock.decisions"])}
        assert decisions["preflight"]["verdict"] == "rejected" and decisions["preflight"]["outcome"] == "deny"
        assert decisions["route"]["route"] == "chat" and decisions["route"]["reason"]
    finally:
        gw.stop()


def test_truncation_through_the_gateway_sends_fewer_turns(tmp_path: Path, sims: dict[str, Sim]) -> None:
    gw = Gateway(
        write_config(
            tmp_path,
            {"sim-eu": sims["sim-eu"]},
            model_extra={"context_window": 400},
            tokens={"preflight": {"mode": "truncate"}},
        )
    )
    try:
        body = {**chat(21), "model": "chat"}
        r = httpx.post(f"{gw.url}/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"}, json=body)
        assert r.status_code == 200
        row = wait_recorded(gw.data_dir, 1, where=f"request_id = '{r.headers['x-request-id']}'")[0]
        decision = {d["kind"]: d for d in orjson.loads(row["airlock.decisions"])}["preflight"]
        assert decision["verdict"] == "truncated" and decision["outcome"] == "modify"
        assert decision["dropped_messages"] > 0
        sent = orjson.loads(BlobReader(DataDir.at(gw.data_dir)).get(row["airlock.payload.upstream_request"]))
        assert len(sent["messages"]) == len(body["messages"]) - decision["dropped_messages"]
    finally:
        gw.stop()


def test_truncation_never_leaves_an_orphan_tool_result() -> None:
    pf, spec = setup("truncate")
    calls = [{"id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}} for i in "ab"]
    long_text = " ".join(TEXTS["Japanese"]) * 3
    body = {
        "model": "m",
        "max_tokens": 50,
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": long_text},
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "ca", "content": long_text},
            {"role": "tool", "tool_call_id": "cb", "content": long_text},
        ],
    }
    with pytest.raises(ContextWindowExceeded):  # rather than send [system, tool b]
        pf.check(spec, "m", body)
