"""The recorder: spans, hops and payloads, off the request path."""

from airlock.record.ids import format_traceparent, new_span_id, new_trace_id, parse_traceparent
from airlock.record.recorder import Recorder
from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.record.writer import BatchWriter

__all__ = [
    "HOP_SCHEMA",
    "SPAN_SCHEMA",
    "BatchWriter",
    "Recorder",
    "format_traceparent",
    "new_span_id",
    "new_trace_id",
    "parse_traceparent",
]
