"""Span rows of the record to an OTLP ExportTraceServiceRequest (protobuf): the inverse of otlp_in,
for sending the record on to a user's collector. Columns become attributes under their own names
(gen_ai.*, airlock.*); free attributes keep theirs; the request headers stay home."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

# Columns that are part of the span itself, not attributes; and columns never sent on.
_STRUCTURAL = frozenset(
    {"trace_id", "span_id", "parent_span_id", "name", "start_ns", "end_ns", "status", "error_message", "attributes"}
)
_NOT_SENT = frozenset({"airlock.request.headers", "airlock.schema_version", "otel.span_kind", "otel.scope.name"})
_SPAN_KINDS = {
    "internal": Span.SPAN_KIND_INTERNAL,
    "server": Span.SPAN_KIND_SERVER,
    "client": Span.SPAN_KIND_CLIENT,
    "producer": Span.SPAN_KIND_PRODUCER,
    "consumer": Span.SPAN_KIND_CONSUMER,
}
EXPORT_COLUMNS_SKIPPED = _STRUCTURAL | _NOT_SENT


def _set_value(target: AnyValue, value: Any) -> bool:
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, (list, tuple)):
        for item in value:
            if item is not None:
                _set_value(target.array_value.values.add(), item)
    else:
        return False
    return True


def _add_attr(attrs: Any, key: str, value: Any) -> None:
    kv = KeyValue(key=key)
    if _set_value(kv.value, value):
        attrs.append(kv)


def _bytes_id(hex_id: str | None, length: int) -> bytes:
    if not hex_id:
        return b""
    try:
        raw = bytes.fromhex(hex_id)
    except ValueError:
        return b""
    return raw if len(raw) == length else b""


def fill_span(span: Span, row: dict[str, Any]) -> None:
    span.trace_id = _bytes_id(row.get("trace_id"), 16)
    span.span_id = _bytes_id(row.get("span_id"), 8)
    span.parent_span_id = _bytes_id(row.get("parent_span_id"), 8)
    span.name = row.get("name") or row.get("kind") or "span"
    span.kind = _SPAN_KINDS.get(row.get("otel.span_kind") or "", Span.SPAN_KIND_SERVER)
    span.start_time_unix_nano = int(row.get("start_ns") or 0)
    span.end_time_unix_nano = int(row.get("end_ns") or row.get("start_ns") or 0)
    if row.get("status") in ("error", "cancelled"):
        span.status.code = Status.STATUS_CODE_ERROR
        span.status.message = row.get("error_message") or row.get("error_type") or row["status"]
    attrs: list[KeyValue] = []
    for column, value in row.items():
        if value is None or column in EXPORT_COLUMNS_SKIPPED or column.startswith("_"):
            continue
        _add_attr(attrs, column, value)
    if row.get("status") == "cancelled":
        _add_attr(attrs, "airlock.status", "cancelled")
    free = row.get("attributes") or {}
    pairs = free.items() if isinstance(free, dict) else free  # pyarrow gives a map as a list of pairs
    for key, value in pairs:
        if key not in row and value is not None:
            _add_attr(attrs, key, value)
    span.attributes.extend(attrs)


def export_request(rows: Iterable[dict[str, Any]], service_name: str) -> ExportTraceServiceRequest:
    """One ResourceSpans per gateway node (service.name and airlock.node on the resource)."""
    request = ExportTraceServiceRequest()
    by_node: dict[str, Any] = {}
    for row in rows:
        node = row.get("airlock.node") or ""
        scope_spans = by_node.get(node)
        if scope_spans is None:
            rs = request.resource_spans.add()
            _add_attr(rs.resource.attributes, "service.name", service_name)
            if node:
                _add_attr(rs.resource.attributes, "airlock.node", node)
            scope_spans = by_node[node] = rs.scope_spans.add()
            scope_spans.scope.name = "airlock"
        fill_span(scope_spans.spans.add(), row)
    return request
