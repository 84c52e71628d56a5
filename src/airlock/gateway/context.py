"""What the request path needs to know about a request: its ids and its trace. Everything else the
headers say (principal, attributes) is read by the recorder, off the request path."""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web

from airlock.record.ids import new_span_id, new_trace_id, parse_traceparent


@dataclass(slots=True)
class RequestContext:
    start_ns: int
    start_perf: float
    trace_id: str
    span_id: str
    parent_span_id: str | None
    tenant: str | None = None

    @property
    def request_id(self) -> str:
        return self.span_id

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.start_perf) * 1000.0


def fresh_context() -> RequestContext:
    """A context of its own trace, for an answer given before any request could be read (a protocol
    error): nothing the client sent is trusted, its traceparent included."""
    return RequestContext(time.time_ns(), time.perf_counter(), new_trace_id(), new_span_id(), None)


CONTEXT_KEY = web.RequestKey("airlock_context", RequestContext)


def context_from(request: web.Request) -> RequestContext:
    """The request's context, made on first ask (by the error boundary, before any handler) and the same
    one after, so a handler's record, its response headers and any error answer share one request id."""
    ctx = request.get(CONTEXT_KEY)
    if ctx is None:
        parent = parse_traceparent(request.headers.get("traceparent"))
        trace_id, parent_span = parent if parent else (new_trace_id(), None)
        ctx = RequestContext(time.time_ns(), time.perf_counter(), trace_id, new_span_id(), parent_span)
        request[CONTEXT_KEY] = ctx
    return ctx
