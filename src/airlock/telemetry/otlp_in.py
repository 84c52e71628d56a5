"""OTLP trace payloads (protobuf or the OTLP JSON mapping) to rows of the span schema.

Each OTLP span becomes one span row: ids as lowercase hex, times in ns, status, the GenAI attributes
that have a column of their own in those columns, and every other span and resource attribute (for
instance service.name) in the free `attributes` map. The span's kind column is the GenAI kind when
gen_ai.operation.name names one, else 'otlp'. The tenant is never read from a payload: the caller
stamps it from the bearer key. Nor is anything else in Airlock's own namespace: a sender's `airlock.*`
resource and span attributes (but its own costs, `airlock.cost.<category>`) are left out, and their
names listed in `airlock.otlp.refused_attributes`, so no sender can pass its spans off as another
tenant's (or as anything Airlock itself recorded).

A payload that cannot be read at all raises OtlpDecodeError (a 400); a span that is readable but
invalid (bad ids) is left out and counted in `Decoded.rejected`, as OTLP's partial success asks.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]  # no stubs installed
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from airlock.errors import OtlpDecodeError

SOURCE = "otlp"
MAX_ATTRIBUTES = 256  # per span, resource attributes included; the rest are dropped and counted
MAX_VALUE_CHARS = 4096
RESERVED_PREFIX = "airlock."  # Airlock's own attribute namespace: never taken from a sender, except
SENDER_COSTS_PREFIX = "airlock.cost."  # a span's own costs (the ledger's line items), on its own tenant's bill


def reserved(key: str) -> bool:
    """Whether an attribute name is Airlock's to set, not a sender's."""
    lowered = key.lower()
    return lowered.startswith(RESERVED_PREFIX) and not key.startswith(SENDER_COSTS_PREFIX)


REFUSED_ATTRIBUTES = "airlock.otlp.refused_attributes"

# gen_ai.operation.name -> the span kind Airlock's own spans of that sort carry
GENAI_KINDS = {
    "chat": "model.chat",
    "generate_content": "model.chat",
    "text_completion": "model.completion",
    "embeddings": "model.embedding",
    "execute_tool": "tool",
    "invoke_agent": "agent",
    "create_agent": "agent",
    "retrieval": "retrieval",
}
OTEL_SPAN_KINDS = {0: None, 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_JSON_SPAN_KINDS = {f"SPAN_KIND_{v.upper()}": k for k, v in OTEL_SPAN_KINDS.items() if v} | {"SPAN_KIND_UNSPECIFIED": 0}

# Attributes that have a column of their own, and the type of that column.
_STR, _INT, _FLOAT = str, int, float
COLUMN_ATTRIBUTES: dict[str, tuple[str, type]] = {
    "gen_ai.operation.name": ("gen_ai.operation.name", _STR),
    "gen_ai.request.model": ("gen_ai.request.model", _STR),
    "gen_ai.response.model": ("gen_ai.response.model", _STR),
    "gen_ai.response.id": ("gen_ai.response.id", _STR),
    "gen_ai.request.max_tokens": ("gen_ai.request.max_tokens", _INT),
    "gen_ai.request.temperature": ("gen_ai.request.temperature", _FLOAT),
    "gen_ai.request.top_p": ("gen_ai.request.top_p", _FLOAT),
    "gen_ai.request.seed": ("gen_ai.request.seed", _INT),
    "gen_ai.usage.input_tokens": ("gen_ai.usage.input_tokens", _INT),
    "gen_ai.usage.output_tokens": ("gen_ai.usage.output_tokens", _INT),
    "gen_ai.usage.cache_read.input_tokens": ("gen_ai.usage.cache_read.input_tokens", _INT),
    "gen_ai.usage.cache_creation.input_tokens": ("gen_ai.usage.cache_creation.input_tokens", _INT),
    "gen_ai.usage.prompt_tokens": ("gen_ai.usage.input_tokens", _INT),  # older names of the same thing
    "gen_ai.usage.completion_tokens": ("gen_ai.usage.output_tokens", _INT),
    "gen_ai.prompt.name": ("airlock.prompt.name", _STR),
    "gen_ai.prompt.version": ("airlock.prompt.version", _STR),
    "error.type": ("error_type", _STR),
    "http.response.status_code": ("http_status", _INT),
}


@dataclass
class Decoded:
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)

    def reject(self, why: str) -> None:
        self.rejected += 1
        if len(self.reasons) < 5:
            self.reasons.append(why)


def _text(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = repr(value)
    elif isinstance(value, bytes):
        text = base64.b64encode(value).decode()
    else:
        text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS]


# The values an integer column takes from a sender: counts are never negative, and every one fits the
# column's int64. A value outside its range stays a free attribute, as text, as any other mistyped one.
_INT_RANGES: dict[str, tuple[int, int]] = {
    "gen_ai.request.seed": (-(2**63), 2**63 - 1),
    "http_status": (100, 599),
}
_COUNT_RANGE = (0, 2**63 - 1)


def _typed(value: Any, typ: type, column: str) -> Any:
    """An attribute value as its column's type; None if it is not one (or is out of the column's range)."""
    try:
        if typ is str:
            return value if isinstance(value, str) else _text(value)
        if typ is int and not isinstance(value, bool):
            if isinstance(value, float) and not value.is_integer():
                return None
            n = int(value)
            low, high = _INT_RANGES.get(column, _COUNT_RANGE)
            return n if low <= n <= high else None
        if typ is float and not isinstance(value, bool):
            x = float(value)
            return x if math.isfinite(x) else None
    except (TypeError, ValueError, OverflowError):
        return None
    return None


def build_row(
    trace_id: str,
    span_id: str,
    parent_span_id: str | None,
    name: str,
    span_kind: int,
    start_ns: int,
    end_ns: int,
    status_code: int,
    status_message: str,
    attributes: Iterable[tuple[str, Any]],
    resource: dict[str, Any],
    scope: str | None,
    events: list[dict[str, Any]],
    out: Decoded,
) -> None:
    """Validate one span and append its row to `out` (or count it as rejected)."""
    if len(trace_id) != 32 or trace_id == "0" * 32 or not _is_hex(trace_id):
        out.reject(f"span {name!r}: trace id must be 16 bytes, not all zero")
        return
    if len(span_id) != 16 or span_id == "0" * 16 or not _is_hex(span_id):
        out.reject(f"span {name!r}: span id must be 8 bytes, not all zero")
        return
    if parent_span_id and (len(parent_span_id) != 16 or not _is_hex(parent_span_id)):
        out.reject(f"span {name!r}: parent span id must be 8 bytes")
        return
    if end_ns and start_ns and end_ns < start_ns:
        out.reject(f"span {name!r}: ends before it starts")
        return
    row: dict[str, Any] = {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent_span_id or None,
        "name": name[:1000] or None,
        "start_ns": start_ns or None,
        "end_ns": end_ns or None,
        "status": "error" if status_code == 2 else "ok",
        "airlock.source": SOURCE,
        "otel.span_kind": OTEL_SPAN_KINDS.get(span_kind),
        "otel.scope.name": scope or None,
    }
    free: dict[str, str] = {}
    refused: set[str] = set()
    for key, value in resource.items():
        if reserved(key):
            refused.add(key)
            continue
        free[key] = _text(value)
    for key, value in attributes:
        if reserved(key):
            refused.add(key)
            continue
        column = COLUMN_ATTRIBUTES.get(key)
        if column is not None and value is not None:
            typed = _typed(value, column[1], column[0])
            if typed is not None:
                row[column[0]] = typed
                continue
        if key == "gen_ai.response.finish_reasons" and isinstance(value, list):
            row["gen_ai.response.finish_reasons"] = [_text(v) for v in value]
            continue
        free[key] = _text(value)
    if len(free) > MAX_ATTRIBUTES:
        free = dict(list(free.items())[:MAX_ATTRIBUTES])
        free["otel.dropped_attributes"] = "true"
    if events:
        free["otel.events"] = _text(events)
    if refused:
        free[REFUSED_ATTRIBUTES] = _text(",".join(sorted(refused)))
    row["attributes"] = free
    operation = row.get("gen_ai.operation.name")
    row["kind"] = GENAI_KINDS.get(operation, SOURCE) if isinstance(operation, str) else SOURCE
    if row["status"] == "error":
        row.setdefault("error_type", "otlp_status_error")
        if status_message:
            row["error_message"] = status_message[:1000]
    out.rows.append(row)


def _is_hex(s: str) -> bool:
    try:
        int(s, 16)
    except ValueError:
        return False
    return True


# -- protobuf --------------------------------------------------------------------------------------


def _pb_value(v: Any) -> Any:
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_pb_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _pb_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which)


def _pb_attrs(kvs: Any) -> list[tuple[str, Any]]:
    return [(kv.key, _pb_value(kv.value)) for kv in kvs]


def decode_protobuf(body: bytes) -> Decoded:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise OtlpDecodeError(f"not an OTLP ExportTraceServiceRequest in protobuf: {e}") from None
    out = Decoded()
    for rs in request.resource_spans:
        resource = dict(_pb_attrs(rs.resource.attributes))
        for ss in rs.scope_spans:
            scope = ss.scope.name
            for s in ss.spans:
                events = [
                    {"name": e.name, "time_ns": e.time_unix_nano, "attributes": dict(_pb_attrs(e.attributes))}
                    for e in s.events
                ]
                build_row(
                    s.trace_id.hex(),
                    s.span_id.hex(),
                    s.parent_span_id.hex(),
                    s.name,
                    s.kind,
                    s.start_time_unix_nano,
                    s.end_time_unix_nano,
                    s.status.code,
                    s.status.message,
                    _pb_attrs(s.attributes),
                    resource,
                    scope,
                    events,
                    out,
                )
    return out


# -- JSON (the OTLP JSON mapping: lowerCamelCase, hex ids, 64-bit integers as strings) -----------------


def _json_value(v: Any) -> Any:
    if not isinstance(v, dict):
        raise OtlpDecodeError("an attribute value must be an AnyValue object")
    for key, value in v.items():
        if key in ("stringValue", "string_value"):
            return value if isinstance(value, str) else _text(value)
        if key in ("boolValue", "bool_value"):
            return bool(value)
        if key in ("intValue", "int_value"):
            try:
                return int(value)
            except (TypeError, ValueError):
                raise OtlpDecodeError(f"intValue {value!r} is not an integer") from None
        if key in ("doubleValue", "double_value"):
            try:
                return float(value)
            except (TypeError, ValueError):
                raise OtlpDecodeError(f"doubleValue {value!r} is not a number") from None
        if key in ("bytesValue", "bytes_value"):
            return value if isinstance(value, str) else None  # kept as the base64 text it arrived as
        if key in ("arrayValue", "array_value"):
            return [_json_value(x) for x in _list(_obj(value).get("values"))]
        if key in ("kvlistValue", "kvlist_value"):
            return dict(_json_attrs(_obj(value).get("values")))
    return None


def _obj(v: Any) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise OtlpDecodeError(f"expected an object, got {type(v).__name__}")
    return v


def _list(v: Any) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise OtlpDecodeError(f"expected a list, got {type(v).__name__}")
    return v


def _json_attrs(kvs: Any) -> list[tuple[str, Any]]:
    out = []
    for kv in _list(kvs):
        kv = _obj(kv)
        key = kv.get("key")
        if not isinstance(key, str):
            raise OtlpDecodeError("an attribute needs a string 'key'")
        out.append((key, _json_value(kv["value"]) if kv.get("value") is not None else None))
    return out


def _get(d: dict[str, Any], camel: str, snake: str) -> Any:
    return d[camel] if camel in d else d.get(snake)


def _json_id(v: Any) -> str:
    """Ids are hex in OTLP JSON; the protobuf JSON mapping's base64 is accepted too, as collectors differ."""
    if v is None or v == "":
        return ""
    if not isinstance(v, str):
        raise OtlpDecodeError("ids must be hex strings")
    if len(v) in (16, 32) and _is_hex(v):
        return v.lower()
    try:
        return base64.b64decode(v, validate=True).hex()
    except (binascii.Error, ValueError):
        return v  # rejected per span by its length check


def _json_int(v: Any, what: str) -> int:
    if v is None or v == "":
        return 0
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise OtlpDecodeError(f"{what} must be an integer (a string in OTLP JSON), got {v!r}") from None
    if n < 0 or n >= 2**63:
        raise OtlpDecodeError(f"{what} out of range")
    return n


def _json_kind(v: Any) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v if v in OTEL_SPAN_KINDS else 0
    if isinstance(v, str):
        return _JSON_SPAN_KINDS.get(v, 0)
    return 0


def _json_status_code(v: Any) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    return {"STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}.get(v, 0) if isinstance(v, str) else 0


def decode_json(body: bytes) -> Decoded:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise OtlpDecodeError(f"body is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise OtlpDecodeError("body must be a JSON object with 'resourceSpans'")
    out = Decoded()
    try:
        for rs in _list(_get(doc, "resourceSpans", "resource_spans")):
            rs = _obj(rs)
            resource = dict(_json_attrs(_obj(rs.get("resource")).get("attributes")))
            for ss in _list(_get(rs, "scopeSpans", "scope_spans")):
                ss = _obj(ss)
                scope = _obj(ss.get("scope")).get("name")
                for s in _list(ss.get("spans")):
                    s = _obj(s)
                    status = _obj(s.get("status"))
                    events = [
                        {
                            "name": _obj(e).get("name"),
                            "time_ns": _json_int(_get(_obj(e), "timeUnixNano", "time_unix_nano"), "event time"),
                            "attributes": dict(_json_attrs(_obj(e).get("attributes"))),
                        }
                        for e in _list(s.get("events"))
                    ]
                    name = s.get("name")
                    message = status.get("message")
                    build_row(
                        _json_id(_get(s, "traceId", "trace_id")),
                        _json_id(_get(s, "spanId", "span_id")),
                        _json_id(_get(s, "parentSpanId", "parent_span_id")),
                        name if isinstance(name, str) else "",
                        _json_kind(s.get("kind")),
                        _json_int(_get(s, "startTimeUnixNano", "start_time_unix_nano"), "startTimeUnixNano"),
                        _json_int(_get(s, "endTimeUnixNano", "end_time_unix_nano"), "endTimeUnixNano"),
                        _json_status_code(status.get("code")),
                        message if isinstance(message, str) else "",
                        _json_attrs(s.get("attributes")),
                        resource,
                        scope if isinstance(scope, str) else None,
                        events,
                        out,
                    )
    except (KeyError, TypeError, AttributeError) as e:
        raise OtlpDecodeError(f"not an OTLP trace export: {type(e).__name__}: {e}") from None
    return out


DECODERS: dict[str, Callable[[bytes], Decoded]] = {
    "application/x-protobuf": decode_protobuf,
    "application/protobuf": decode_protobuf,
    "application/json": decode_json,
}
