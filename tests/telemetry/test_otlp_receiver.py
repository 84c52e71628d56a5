"""POST /v1/traces on a real gateway: spans from the OpenTelemetry SDK (protobuf) and OTLP JSON land in
the record beside the gateway's own and join them by trace id; bad payloads get problem+json and count
as rejected."""

from __future__ import annotations

import gzip
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from helpers import API_KEY, Gateway, Sim, wait_recorded, write_config

AUTH = {"Authorization": f"Bearer {API_KEY}"}
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(scope="module")
def gw(sims: dict[str, Sim], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(write_config(tmp_path_factory.mktemp("otlp"), sims))
    yield g
    g.stop()


def json_payload(trace_id: str = TRACE, span_id: str = "00f067aa0ba902b7", **span: object) -> dict:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "rag-app"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "rag"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "name": "retrieve documents",
                                "kind": 3,
                                "startTimeUnixNano": "1764460000000000000",
                                "endTimeUnixNano": "1764460000250000000",
                                "attributes": [
                                    {"key": "gen_ai.operation.name", "value": {"stringValue": "retrieval"}},
                                    {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "42"}},
                                    {"key": "db.top_k", "value": {"intValue": "5"}},
                                    {"key": "cache.hit", "value": {"boolValue": True}},
                                    {"key": "score", "value": {"doubleValue": 0.5}},
                                    {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}]}}},
                                ],
                                "status": {"code": 2, "message": "index offline"},
                                **span,
                            }
                        ],
                    }
                ],
            }
        ]
    }


def test_sdk_spans_join_the_gateways_by_trace_id(gw: Gateway) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "agent-app", "deployment": "canary"}))
    exporter = OTLPSpanExporter(endpoint=f"{gw.url}/v1/traces", headers=AUTH, compression=None)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test-agent")
    with tracer.start_as_current_span("invoke_agent planner") as root:
        root.set_attribute("gen_ai.operation.name", "invoke_agent")
        root.set_attribute("tenant.plan", "gold")
        ctx = root.get_span_context()
        traceparent = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-01"
        with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=API_KEY, max_retries=0) as client:
            client.chat.completions.create(
                model="chat",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"traceparent": traceparent},
            )
        with tracer.start_as_current_span("execute_tool search") as tool:
            tool.set_attribute("gen_ai.operation.name", "execute_tool")
            tool.set_status(Status(StatusCode.ERROR, "search backend down"))
    provider.shutdown()
    trace_id = f"{ctx.trace_id:032x}"
    rows = wait_recorded(gw.data_dir, 3, where=f"trace_id = '{trace_id}'")
    by_kind = {r["kind"]: r for r in rows}
    assert set(by_kind) == {"agent", "tool", "model.chat"}
    agent, tool, chat = by_kind["agent"], by_kind["tool"], by_kind["model.chat"]
    assert chat["parent_span_id"] == agent["span_id"]  # the gateway's span hangs under the app's
    assert tool["parent_span_id"] == agent["span_id"]
    assert agent["airlock.source"] == "otlp" and chat["airlock.source"] is None
    assert agent["airlock.tenant"] == "acme"  # from the bearer key, as for the gateway's spans
    attrs = dict(agent["attributes"])
    assert attrs["service.name"] == "agent-app" and attrs["deployment"] == "canary" and attrs["tenant.plan"] == "gold"
    assert agent["otel.scope.name"] == "test-agent" and agent["otel.span_kind"] == "internal"
    assert tool["status"] == "error" and tool["error_message"] == "search backend down"
    assert agent["duration_ms"] > 0


def test_json_gzip_maps_genai_attributes_to_columns(gw: Gateway) -> None:
    body = gzip.compress(orjson.dumps(json_payload(span_id="00f067aa0ba902b8")))
    r = httpx.post(
        f"{gw.url}/v1/traces",
        content=body,
        headers={**AUTH, "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {}  # everything accepted: no partialSuccess
    row = wait_recorded(gw.data_dir, 1, where="span_id = '00f067aa0ba902b8'")[0]
    assert row["kind"] == "retrieval" and row["gen_ai.usage.input_tokens"] == 42
    assert row["start_ns"] == 1764460000000000000 and row["duration_ms"] == 250.0
    attrs = dict(row["attributes"])
    assert attrs["db.top_k"] == "5" and attrs["cache.hit"] == "true" and attrs["tags"] == '["a"]'
    assert attrs["service.name"] == "rag-app" and "gen_ai.usage.input_tokens" not in attrs
    assert row["status"] == "error" and row["error_message"] == "index offline"


def test_invalid_spans_are_partial_success_and_counted(gw: Gateway) -> None:
    payload = json_payload(span_id="00f067aa0ba902b9")
    spans = payload["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans.append({**spans[0], "traceId": "00000000000000000000000000000000", "spanId": "1111111111111111"})
    r = httpx.post(f"{gw.url}/v1/traces", json=payload, headers=AUTH)
    assert r.status_code == 200
    assert r.json()["partialSuccess"]["rejectedSpans"] == "1"
    assert "trace id" in r.json()["partialSuccess"]["errorMessage"]
    # the same in protobuf: the answer is a protobuf ExportTraceServiceResponse
    from airlock.telemetry.otlp_in import decode_json

    assert decode_json(orjson.dumps(payload)).rejected == 1


@pytest.mark.parametrize(
    ("headers", "body", "status", "detail"),
    [
        ({"Content-Type": "application/x-protobuf"}, b"\xff\xff\xff\xff garbage", 400, "protobuf"),
        ({"Content-Type": "application/json"}, b"{not json", 400, "JSON"),
        ({"Content-Type": "application/json"}, b'{"resourceSpans": {"a": 1}}', 400, "list"),
        ({"Content-Type": "application/json"}, b'{"resourceSpans": [{"scopeSpans": [{"spans": [7]}]}]}', 400, "object"),
        ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, b"not gzip", 400, "decoded"),
        ({"Content-Type": "application/json", "Content-Encoding": "snappy"}, b"{}", 415, "Content-Encoding"),
        ({"Content-Type": "text/plain"}, b"{}", 415, "Content-Type"),
        ({"Content-Type": "application/json", "Authorization": "Bearer wrong"}, b"{}", 401, "unknown API key"),
    ],
)
def test_bad_payloads_get_problem_json(gw: Gateway, headers: dict, body: bytes, status: int, detail: str) -> None:
    r = httpx.post(f"{gw.url}/v1/traces", content=body, headers={**AUTH, **headers})
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert detail in r.json()["detail"]


def test_oversized_gzip_body_is_refused_after_decompression(gw: Gateway) -> None:
    bomb = gzip.compress(b"{" + b" " * 200_000 + b"}")  # the test gateway allows 64 KiB
    headers = {**AUTH, "Content-Type": "application/json", "Content-Encoding": "gzip"}
    r = httpx.post(f"{gw.url}/v1/traces", content=bomb, headers=headers)
    assert r.status_code == 413
    assert httpx.get(f"{gw.url}/healthz").status_code == 200  # the worker is still serving


def test_metrics_count_accepted_and_rejected(gw: Gateway) -> None:
    httpx.post(f"{gw.url}/v1/traces", content=b"junk", headers={**AUTH, "Content-Type": "application/x-protobuf"})
    text = httpx.get(f"{gw.url}/metrics").text

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # workers publish their counters about once a second
        text = httpx.get(f"{gw.url}/metrics").text
        rejected = re.search(r"airlock_otlp_requests_rejected_total (\d+)", text)
        if rejected and int(rejected.group(1)) >= 1:
            break
        time.sleep(0.1)
    assert int(re.search(r"airlock_otlp_requests_rejected_total (\d+)", text).group(1)) >= 1
    assert re.search(r'airlock_otlp_spans_total\{outcome="rejected"\} \d+', text)


def test_protobuf_answer_is_an_export_response(gw: Gateway) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = bytes.fromhex(TRACE), bytes.fromhex("00f067aa0ba902ba"), "x"
    bad = req.resource_spans[0].scope_spans[0].spans.add()
    bad.trace_id, bad.span_id = b"\x01" * 3, b"\x02" * 8
    r = httpx.post(
        f"{gw.url}/v1/traces",
        content=req.SerializeToString(),
        headers={**AUTH, "Content-Type": "application/x-protobuf"},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf"
    answer = ExportTraceServiceResponse.FromString(r.content)
    assert answer.partial_success.rejected_spans == 1
    rows = wait_recorded(gw.data_dir, 1, where="span_id = '00f067aa0ba902ba'")
    assert rows[0]["kind"] == "otlp" and rows[0]["trace_id"] == TRACE


def test_refused_export_is_recorded(gw: Gateway, tmp_path: Path) -> None:
    r = httpx.post(f"{gw.url}/v1/traces", content=b"{]", headers={**AUTH, "Content-Type": "application/json"})
    rid = r.headers["x-request-id"]
    row = wait_recorded(gw.data_dir, 1, where=f"request_id = '{rid}'")[0]
    assert row["kind"] == "gateway.reject" and row["http_status"] == 400 and row["airlock.tenant"] is None


def test_query_and_traces_see_received_attributes(gw: Gateway) -> None:
    """A free attribute from an x-airlock-attr-* header and one from an OTLP resource answer the same query."""
    from airlock.query import Filter, QuerySpec, run_query
    from airlock.store.embedded import DataDir
    from airlock.store.embedded.query_engine import DuckDBSpanQuery

    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=API_KEY, max_retries=0) as client:
        client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-airlock-attr-cohort": "beta-7"},
        )
    payload = json_payload(span_id="00f067aa0ba902bb")
    payload["resourceSpans"][0]["resource"]["attributes"].append({"key": "cohort", "value": {"stringValue": "beta-7"}})
    assert httpx.post(f"{gw.url}/v1/traces", json=payload, headers=AUTH).status_code == 200
    wait_recorded(gw.data_dir, 2, where="attributes['cohort'] = 'beta-7'")
    spec = QuerySpec(where=(Filter.parse("cohort=beta-7"),), by=("source",))
    result = run_query(DuckDBSpanQuery(DataDir.at(gw.data_dir)), spec)
    assert {r["source"]: r["spans"] for r in result.rows} == {None: 1, "otlp": 1}


def test_durable_mode_answers_after_the_spans_are_synced(sims: dict[str, Sim], tmp_path: Path) -> None:
    g = Gateway(write_config(tmp_path, sims, recorder={"durable": True, "segment_max_age_s": 0.2}))
    try:
        r = httpx.post(f"{g.url}/v1/traces", json=json_payload(span_id="00f067aa0ba902bc"), headers=AUTH)
        assert r.status_code == 200 and r.json() == {}
        assert wait_recorded(g.data_dir, 1, where="span_id = '00f067aa0ba902bc'")[0]["kind"] == "retrieval"
    finally:
        g.stop()
