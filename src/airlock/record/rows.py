"""Turning a queued record into its span row: payloads into the blob store, facts read from the
payloads and headers, and a partial row (with the reason) for a record that cannot be read."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
import pyarrow as pa

from airlock.record.enrich import enrich
from airlock.record.headers import apply_headers
from airlock.record.schema import HOP_SCHEMA, PAYLOAD_COLUMNS, SCHEMA_VERSION, SPAN_SCHEMA
from airlock.store.interface import PayloadSink

log = logging.getLogger("airlock.recorder")

# What a record keeps when its derived fields cannot be built: ids, times, status, routing, payload digests.
_CORE_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "request_id",
    "kind",
    "name",
    "start_ns",
    "end_ns",
    "status",
    "http_status",
    "error_type",
    "error_message",
    "airlock.node",
    "airlock.node.region",
    "airlock.tenant",
    "gen_ai.request.model",
    "airlock.route",
    "airlock.upstream",
    "airlock.upstream.region",
    "airlock.upstream.jurisdiction",
    "airlock.attempts",
    "airlock.payload.request",
    "airlock.payload.upstream_request",
    "airlock.payload.response",
)


def store_payloads(records: list[dict[str, Any]], blobs: PayloadSink, sync: bool = False) -> None:
    """Put every payload of a batch in the blob store at once; set each record's digest columns."""
    places, items = [], []
    same: list[tuple[dict[str, Any], str, str]] = []  # a payload that is the very object of another column
    for record in records:
        payloads: dict[str, bytes] = record.get("_payloads") or {}
        seen: dict[int, str] = {}
        for column in PAYLOAD_COLUMNS:
            data = payloads.get(column)
            if data is None:
                continue
            if id(data) in seen:  # the request sent upstream unchanged: hash and store it once
                same.append((record, column, seen[id(data)]))
                continue
            seen[id(data)] = column
            places.append((record, column))
            items.append(data)
    for (record, column), digest in zip(places, blobs.put_many(items, sync=sync), strict=True):
        record[column] = digest
    for record, column, twin in same:
        record[column] = record[twin]


def finish_row(
    record: dict[str, Any], stamp: dict[str, Any] | None = None, resolve_tokenizer: Callable[[str], Any] | None = None
) -> dict[str, Any]:
    """Turn a queued record, whose payloads are already stored, into its span row, in place: facts
    read from the response, digests instead of bytes, JSON for nested values. The row keeps its hops
    under "_hops". Idempotent, so a row read back from the write-ahead file passes through unchanged."""
    raw_headers = record.pop("_raw_headers", None)
    if raw_headers is not None:
        apply_headers(record, raw_headers)
    if stamp:
        for key, value in stamp.items():
            record.setdefault(key, value)
    if record.get("name") is None:
        operation = record.get("gen_ai.operation.name") or record.get("kind")
        record["name"] = f"{operation} {record.get('gen_ai.request.model') or ''}".strip()
    payloads: dict[str, bytes] | None = record.pop("_payloads", None)
    request_doc = record.pop("_request_doc", None)  # from in-process callers or older spill files
    if payloads:
        enrich(record, payloads, record.pop("_tokenizer", None), resolve_tokenizer, request_doc)
        for column, size_column in (
            ("airlock.payload.request", "airlock.payload.request_bytes"),
            ("airlock.payload.response", "airlock.payload.response_bytes"),
        ):
            if record.get(size_column) is None and column in payloads:
                record[size_column] = len(payloads[column])
    record.pop("_response_format", None)
    record.pop("_tokenizer", None)
    for column in ("airlock.request.headers", "airlock.decisions"):
        value = record.get(column)
        if value is not None and not isinstance(value, str):
            record[column] = orjson.dumps(value).decode()
    attrs = record.get("attributes")
    if isinstance(attrs, list):  # a map read back from msgpack arrives as pairs
        record["attributes"] = {str(k): str(v) for k, v in attrs}
    elif isinstance(attrs, dict) and not all(isinstance(v, str) for v in attrs.values()):
        record["attributes"] = {str(k): str(v) for k, v in attrs.items()}
    start, end = record.get("start_ns"), record.get("end_ns")
    if start is not None and end is not None and record.get("duration_ms") is None:
        record["duration_ms"] = (end - start) / 1e6
    record["airlock.schema_version"] = SCHEMA_VERSION
    return record


def partial_row(record: dict[str, Any], error: BaseException) -> dict[str, Any]:
    """What a record keeps when its derived fields cannot be built: ids, times, status, routing,
    payload digests, and the reason in its decisions."""
    log.warning("record %s kept without derived fields: %s", record.get("span_id"), error)
    keep = {}
    for column in _CORE_COLUMNS:
        value = record.get(column)
        try:
            pa.scalar(value, type=SPAN_SCHEMA.field(column).type)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            continue
        keep[column] = value
    keep["airlock.decisions"] = orjson.dumps(
        [{"kind": "recorder", "verdict": "partial", "reason": f"{type(error).__name__}: {error}"[:300]}]
    ).decode()
    hops = [h for h in record.get("_hops") or () if isinstance(h, dict)]
    try:
        pa.RecordBatch.from_pylist(hops, schema=HOP_SCHEMA)
        keep["_hops"] = hops
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        keep["_hops"] = []
    return keep


def checked_row(row: dict[str, Any]) -> dict[str, Any]:
    try:
        pa.RecordBatch.from_pylist([row], schema=SPAN_SCHEMA)
        pa.RecordBatch.from_pylist(list(row.get("_hops") or ()), schema=HOP_SCHEMA)
        return row
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as e:
        return partial_row(row, e)
