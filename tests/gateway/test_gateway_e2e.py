"""The gateway end to end: real simulated upstreams and a real gateway process on 127.0.0.1, driven
by the official openai client, then read back from the record."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from airlock.store.embedded import BlobReader, DataDir, DuckDBSpanReader
from helpers import API_KEY, OTHER_KEY, Gateway, Sim, wait_recorded, write_config

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "kubectl_get",
            "description": "read a resource",
            "parameters": {
                "type": "object",
                "properties": {"namespace": {"type": "string"}, "kind": {"type": "string"}},
            },
        },
    }
]


@pytest.fixture(scope="module")
def gw(sims: dict[str, Sim], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("gw")
    g = Gateway(write_config(tmp, sims))
    yield g
    g.stop()


@pytest.fixture
def client(gw: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=API_KEY, max_retries=0) as c:
        yield c


def span(gw: Gateway, request_id: str) -> dict:
    return wait_recorded(gw.data_dir, 1, where=f"request_id = '{request_id}'")[0]


@pytest.fixture
def blobs(gw: Gateway) -> BlobReader:
    return BlobReader(DataDir.at(gw.data_dir))


def test_chat_roundtrip_is_recorded_with_exact_bytes(
    gw: Gateway, client: openai.OpenAI, sims: dict[str, Sim], blobs: BlobReader
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="sim-large",
        messages=[{"role": "user", "content": "hello"}],
        temperature=0.2,
        seed=11,
        max_tokens=12,
        extra_headers={"x-airlock-task": "task-1", "x-airlock-attr-locale": "ja-JP"},
    )
    done = raw.parse()
    assert done.choices[0].message.content
    request_id = raw.headers["x-request-id"]
    row = span(gw, request_id)
    assert row["status"] == "ok" and row["kind"] == "model.chat"
    assert row["airlock.tenant"] == "acme" and row["airlock.task"] == "task-1"
    assert dict(row["attributes"])["locale"] == "ja-JP"
    assert row["gen_ai.usage.input_tokens"] == done.usage.prompt_tokens
    assert row["gen_ai.usage.output_tokens"] == done.usage.completion_tokens
    assert row["gen_ai.response.finish_reasons"] == ["stop"]
    assert (row["gen_ai.request.temperature"], row["gen_ai.request.seed"], row["gen_ai.request.max_tokens"]) == (
        0.2,
        11,
        12,
    )
    assert row["airlock.request.tool_count"] == 0 and row["gen_ai.response.model"] == "sim-large"
    # The bytes recorded as sent upstream are the bytes the upstream received.
    sent = blobs.get(row["airlock.payload.upstream_request"])
    assert hashlib.sha256(sent).hexdigest() == sims["sim-eu"].stats()["last_body_sha256"]
    assert "authorization" not in row["airlock.request.headers"]
    received = orjson.loads(blobs.get(row["airlock.payload.response"]))
    assert received["id"] == done.id


def test_streaming_tool_call_passes_through_and_usage_is_recorded(
    gw: Gateway, client: openai.OpenAI, blobs: BlobReader
) -> None:
    stream = client.chat.completions.with_raw_response.create(
        model="chat",
        stream=True,
        tools=TOOLS,
        messages=[{"role": "system", "content": "you operate a cluster"}, {"role": "user", "content": "list pods"}],
    )
    request_id = stream.headers["x-request-id"]
    chunks = list(stream.parse())
    calls = [tc for c in chunks for ch in c.choices for tc in (ch.delta.tool_calls or [])]
    assert calls[0].function.name == "kubectl_get"
    arguments = "".join(tc.function.arguments or "" for tc in calls)
    assert set(json.loads(arguments)) == {"namespace", "kind"}
    # The client did not ask for usage, so the usage-only chunk Airlock requested is not shown to it...
    assert all(c.choices for c in chunks)
    row = span(gw, request_id)
    # ... but the record has the provider's usage, from the raw SSE bytes.
    assert row["airlock.request.stream"] is True and row["gen_ai.usage.input_tokens"] > 0
    assert row["airlock.response.tool_call_count"] == 1 and row["airlock.request.tool_count"] == 1
    assert row["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert row["ttft_ms"] is not None and row["ttft_ms"] <= row["duration_ms"]
    raw = blobs.get(row["airlock.payload.response"])
    assert raw.startswith(b"data: ") and raw.rstrip().endswith(b"data: [DONE]")
    assert b'"usage"' in raw
    sent = orjson.loads(blobs.get(row["airlock.payload.upstream_request"]))
    assert sent["stream_options"] == {"include_usage": True} and sent["tools"] == TOOLS


def test_stream_with_client_requested_usage_keeps_usage_chunk(gw: Gateway, client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="sim-large",
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "count"}],
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0


def test_completions_embeddings_and_models(gw: Gateway, client: openai.OpenAI) -> None:
    comp = client.completions.create(model="sim-small", prompt="Once upon a time", max_tokens=5)
    assert comp.choices[0].text
    emb = client.embeddings.create(model="sim-small", input=["a", "b"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 16
    ids = {m.id for m in client.models.list()}
    assert {"chat", "sim-large", "sim-small"} <= ids
    rows = wait_recorded(gw.data_dir, 2, where="kind IN ('model.completion', 'model.embedding')")
    assert {r["gen_ai.operation.name"] for r in rows} >= {"text_completion", "embeddings"}


def test_traceparent_joins_calls_into_one_trace(gw: Gateway, client: openai.OpenAI) -> None:
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    ids = []
    for step in range(3):
        raw = client.chat.completions.with_raw_response.create(
            model="sim-large",
            messages=[{"role": "user", "content": f"step {step}"}],
            extra_headers={"traceparent": f"00-{trace_id}-{parent}-01", "x-airlock-session": "s-1"},
        )
        assert raw.headers["traceparent"].startswith(f"00-{trace_id}-")
        ids.append(raw.headers["x-request-id"])
    rows = wait_recorded(gw.data_dir, 3, where=f"trace_id = '{trace_id}'")
    assert {r["request_id"] for r in rows} == set(ids)
    assert {r["parent_span_id"] for r in rows} == {parent}


def test_other_tenant_by_env_key(gw: Gateway) -> None:
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=OTHER_KEY, max_retries=0) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="sim-small", messages=[{"role": "user", "content": "x"}]
        )
    assert span(gw, raw.headers["x-request-id"])["airlock.tenant"] == "globex"


@pytest.mark.parametrize(
    ("body", "headers", "status", "slug"),
    [
        (b"{not json", {"Authorization": f"Bearer {API_KEY}"}, 400, "bad-request"),
        (b'{"messages": []}', {"Authorization": f"Bearer {API_KEY}"}, 400, "bad-request"),
        (b'{"model": "gpt-nope", "messages": []}', {"Authorization": f"Bearer {API_KEY}"}, 404, "model-not-found"),
        (b'{"model": "sim-large", "messages": []}', {}, 401, "unauthorized"),
        (b'{"model": "sim-large", "messages": []}', {"Authorization": "Bearer wrong"}, 401, "unauthorized"),
        (
            b'{"model": "sim-large", "messages": [], "pad": "' + b"x" * 70000 + b'"}',
            {"Authorization": f"Bearer {API_KEY}"},
            413,
            "payload-too-large",
        ),
    ],
)
def test_bad_input_gets_problem_json_and_is_recorded(
    gw: Gateway, body: bytes, headers: dict, status: int, slug: str
) -> None:
    r = httpx.post(f"{gw.url}/v1/chat/completions", content=body, headers=headers)
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["status"] == status and problem["type"].endswith(slug) and problem["detail"]
    row = span(gw, r.headers["x-request-id"])
    assert row["status"] == "error" and row["error_type"] == slug and row["http_status"] == status


def test_unknown_path_and_method(gw: Gateway) -> None:
    r = httpx.get(f"{gw.url}/v1/chat/completions")
    assert r.status_code == 405 and r.headers["content-type"].startswith("application/problem+json")
    r = httpx.get(f"{gw.url}/v2/nothing")
    assert r.status_code == 404 and r.headers["x-request-id"] in r.json()["instance"]
    r = httpx.get(f"{gw.url}/v1/models")
    assert r.status_code == 401 and r.json()["type"].endswith("unauthorized") and r.headers["x-request-id"]


def test_metrics_and_health(gw: Gateway, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="sim-large", messages=[{"role": "user", "content": "m"}])
    text = httpx.get(f"{gw.url}/metrics").text
    assert 'airlock_requests_total{endpoint="chat",code="2xx"}' in text
    assert "airlock_recorder_queue_depth" in text and "airlock_recorder_dropped_total 0" in text
    assert httpx.get(f"{gw.url}/healthz").json()["status"] == "ok"


def test_payloads_are_stored_once(gw: Gateway, client: openai.OpenAI, blobs: BlobReader) -> None:
    body = {"model": "sim-small", "messages": [{"role": "user", "content": "identical"}], "seed": 7}
    ids = [client.chat.completions.with_raw_response.create(**body).headers["x-request-id"] for _ in range(3)]
    rows = [span(gw, i) for i in ids]
    assert len({r["airlock.payload.request"] for r in rows}) == 1
    digest = rows[0]["airlock.payload.request"]
    reader = DuckDBSpanReader(DataDir.at(gw.data_dir))
    assert reader.sql('SELECT count(*) AS n FROM spans WHERE "airlock.payload.request" = ?', [digest])[0]["n"] == 3
    assert reader.sql("SELECT count(*) AS n FROM blob_index WHERE digest = ?", [digest])[0]["n"] == 1
    assert orjson.loads(blobs.get(digest))["messages"] == body["messages"]
    assert Path(gw.data_dir, "blobs").exists()


def test_no_credential_reaches_the_disk(gw: Gateway, client: openai.OpenAI) -> None:
    """Neither the client's key nor the upstream secret injected from the environment is anywhere in the
    data directory: not in spans, payloads, write-ahead or spill files, nor the status files."""
    client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "secrets?"}], stream=True)
    wait_recorded(gw.data_dir, 1, where='"airlock.request.stream"')
    found = [
        p
        for p in gw.data_dir.rglob("*")
        if p.is_file() and any(secret in p.read_bytes() for secret in (API_KEY.encode(), b"upstream-secret-123"))
    ]
    assert found == []
