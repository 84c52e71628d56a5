"""OTLP payloads to span rows, without a gateway: the JSON mapping's variants, protobuf, and the limits."""

from __future__ import annotations

import base64

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from airlock.telemetry.otlp_in import MAX_ATTRIBUTES, OtlpDecodeError, decode_json, decode_protobuf
from airlock.telemetry.otlp_out import export_request

TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def _doc(**span: object) -> bytes:
    base = {"traceId": TRACE, "spanId": SPAN, "name": "s", "startTimeUnixNano": "10", "endTimeUnixNano": "20"}
    return orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{**base, **span}]}]}]})


def test_enum_names_snake_case_and_base64_ids() -> None:
    row = decode_json(_doc(kind="SPAN_KIND_CLIENT", status={"code": "STATUS_CODE_ERROR"})).rows[0]
    assert row["otel.span_kind"] == "client" and row["status"] == "error"
    snake = orjson.dumps(
        {
            "resource_spans": [
                {
                    "scope_spans": [
                        {
                            "spans": [
                                {
                                    "trace_id": base64.b64encode(bytes.fromhex(TRACE)).decode(),
                                    "span_id": base64.b64encode(bytes.fromhex(SPAN)).decode(),
                                    "name": "x",
                                    "attributes": [{"key": "n", "value": {"int_value": 5}}],
                                }
                            ]
                        }
                    ]
                }
            ]
        }
    )
    row = decode_json(snake).rows[0]
    assert row["trace_id"] == TRACE and row["span_id"] == SPAN and row["attributes"] == {"n": "5"}


def test_genai_kinds_and_columns() -> None:
    attrs = [
        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
        {"key": "gen_ai.request.model", "value": {"stringValue": "m"}},
        {"key": "gen_ai.request.temperature", "value": {"doubleValue": 0.2}},
        {"key": "gen_ai.response.finish_reasons", "value": {"arrayValue": {"values": [{"stringValue": "stop"}]}}},
        {"key": "gen_ai.usage.output_tokens", "value": {"stringValue": "not a number"}},
        {"key": "airlock.tenant", "value": {"stringValue": "someone-else"}},
    ]
    row = decode_json(_doc(attributes=attrs)).rows[0]
    assert row["kind"] == "model.chat" and row["gen_ai.request.model"] == "m"
    assert row["gen_ai.request.temperature"] == 0.2 and row["gen_ai.response.finish_reasons"] == ["stop"]
    assert "gen_ai.usage.output_tokens" not in row and row["attributes"]["gen_ai.usage.output_tokens"] == "not a number"
    assert "airlock.tenant" not in row  # a payload never names the tenant, nor sets airlock.* attributes
    assert "airlock.tenant" not in row["attributes"]
    assert row["attributes"]["airlock.otlp.refused_attributes"] == "airlock.tenant"


@pytest.mark.parametrize(
    ("span", "why"),
    [
        ({"spanId": "00"}, "span id"),
        ({"traceId": "zz" * 16}, "trace id"),
        ({"parentSpanId": "abc"}, "parent"),
        ({"startTimeUnixNano": "30"}, "ends before"),
    ],
)
def test_invalid_spans_are_rejected_alone(span: dict, why: str) -> None:
    decoded = decode_json(_doc(**span))
    assert decoded.rows == [] and decoded.rejected == 1 and why in decoded.reasons[0]


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 5}]}]}]}',
        _doc(startTimeUnixNano="soon"),
        _doc(startTimeUnixNano=str(2**64)),
        _doc(attributes=[{"key": "k", "value": {"intValue": "x"}}]),
        _doc(attributes=[{"value": {"stringValue": "no key"}}]),
    ],
)
def test_unreadable_json_raises(body: bytes) -> None:
    with pytest.raises(OtlpDecodeError):
        decode_json(body)


def test_attribute_count_and_size_are_bounded() -> None:
    many = [{"key": f"k{i}", "value": {"stringValue": "v" * 10_000}} for i in range(MAX_ATTRIBUTES + 10)]
    row = decode_json(_doc(attributes=many)).rows[0]
    assert len(row["attributes"]) == MAX_ATTRIBUTES + 1 and row["attributes"]["otel.dropped_attributes"] == "true"
    assert max(len(v) for v in row["attributes"].values()) <= 4096


def test_round_trip_through_the_exporter() -> None:
    """What the exporter sends, the receiver reads back: ids, times, status, columns and attributes."""
    row = {
        "trace_id": TRACE,
        "span_id": SPAN,
        "parent_span_id": None,
        "name": "chat sim-large",
        "kind": "model.chat",
        "start_ns": 100,
        "end_ns": 250,
        "status": "error",
        "error_message": "upstream 503",
        "gen_ai.operation.name": "chat",
        "gen_ai.usage.input_tokens": 12,
        "airlock.node": "gw-1",
        "attributes": [("feature", "search")],
    }
    body = export_request([row], "airlock").SerializeToString()
    back = decode_protobuf(body).rows[0]
    assert (back["trace_id"], back["span_id"], back["start_ns"], back["end_ns"]) == (TRACE, SPAN, 100, 250)
    assert back["status"] == "error" and back["error_message"] == "upstream 503"
    assert back["kind"] == "model.chat" and back["gen_ai.usage.input_tokens"] == 12
    assert back["attributes"]["feature"] == "search" and back["attributes"]["service.name"] == "airlock"


def test_protobuf_values_of_every_kind() -> None:
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id = bytes.fromhex(TRACE), bytes.fromhex(SPAN)
    span.attributes.extend(
        [
            KeyValue(key="b", value={"bool_value": False}),
            KeyValue(key="d", value={"double_value": 1.5}),
            KeyValue(key="raw", value={"bytes_value": b"\x00\x01"}),
            KeyValue(key="kv", value={"kvlist_value": {"values": [KeyValue(key="x", value={"int_value": 1})]}}),
        ]
    )
    event = span.events.add()
    event.name, event.time_unix_nano = "exception", 15
    attrs = decode_protobuf(req.SerializeToString()).rows[0]["attributes"]
    assert attrs["b"] == "false" and attrs["d"] == "1.5" and attrs["raw"] == "AAE=" and attrs["kv"] == '{"x":1}'
    assert orjson.loads(attrs["otel.events"])[0]["name"] == "exception"


@pytest.mark.parametrize(
    ("key", "value", "sent"),
    [
        ("gen_ai.usage.input_tokens", {"intValue": "-1000000"}, "-1000000"),
        ("gen_ai.usage.output_tokens", {"intValue": str(2**70)}, str(2**70)),
        ("gen_ai.usage.output_tokens", {"doubleValue": 1e300}, "1e+300"),
        ("gen_ai.usage.output_tokens", {"doubleValue": 2.5}, "2.5"),
        ("gen_ai.request.max_tokens", {"intValue": "-3"}, "-3"),
        ("http.response.status_code", {"intValue": "-5"}, "-5"),
        ("gen_ai.request.temperature", {"doubleValue": "nan"}, "nan"),
        ("gen_ai.request.top_p", {"doubleValue": "inf"}, "inf"),
    ],
)
def test_numbers_out_of_their_columns_range_stay_free_text(key: str, value: dict, sent: str) -> None:
    """A sender's negative token count (which would lower its bill), a count over int64 (which lost the
    whole value at write time) or a non-finite float never reaches a typed column."""
    row = decode_json(_doc(attributes=[{"key": key, "value": value}])).rows[0]
    column = {"http.response.status_code": "http_status"}.get(key, key)
    assert column not in row
    assert row["attributes"][key] == sent


def test_numbers_in_range_reach_their_columns() -> None:
    attrs = [
        {"key": "gen_ai.usage.input_tokens", "value": {"doubleValue": 42.0}},
        {"key": "gen_ai.request.seed", "value": {"intValue": "-7"}},
        {"key": "http.response.status_code", "value": {"intValue": "503"}},
        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "0"}},
    ]
    row = decode_json(_doc(attributes=attrs)).rows[0]
    assert (row["gen_ai.usage.input_tokens"], row["gen_ai.request.seed"], row["http_status"]) == (42, -7, 503)
    assert row["gen_ai.usage.output_tokens"] == 0 and row["attributes"] == {}


def test_a_sender_keeps_its_own_costs_but_no_other_airlock_attribute() -> None:
    attrs = [
        {"key": "airlock.cost.tool", "value": {"doubleValue": 0.002}},
        {"key": "airlock.task", "value": {"stringValue": "someone-elses-task"}},
        {"key": "AIRLOCK.COST.tool", "value": {"doubleValue": 9.0}},  # not the exact prefix: refused
    ]
    row = decode_json(_doc(attributes=attrs)).rows[0]
    assert row["attributes"]["airlock.cost.tool"] == "0.002"
    assert "airlock.task" not in row["attributes"] and "AIRLOCK.COST.tool" not in row["attributes"]
    assert row["attributes"]["airlock.otlp.refused_attributes"] == "AIRLOCK.COST.tool,airlock.task"
