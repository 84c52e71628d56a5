"""What a request says about itself: its trace, its principal, and free attributes from headers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from airlock.record.ids import new_span_id, new_trace_id, parse_traceparent

ATTR_PREFIX = "x-airlock-attr-"
_HEADER_COLUMNS = {
    "x-airlock-session": "airlock.session",
    "x-airlock-task": "airlock.task",
    "x-airlock-user": "airlock.user",
    "x-airlock-agent": "airlock.agent_chain",
    "x-airlock-intent": "airlock.intent",
    "x-airlock-prompt": "airlock.prompt.name",
    "x-airlock-prompt-version": "airlock.prompt.version",
}
# Never recorded: credentials and cookies.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"})


@dataclass
class RequestContext:
    start_ns: int
    start_perf: float
    trace_id: str
    span_id: str
    parent_span_id: str | None
    columns: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    tenant: str | None = None

    @property
    def request_id(self) -> str:
        return self.span_id

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.start_perf) * 1000.0


def context_from(request: web.Request) -> RequestContext:
    parent = parse_traceparent(request.headers.get("traceparent"))
    trace_id, parent_span = parent if parent else (new_trace_id(), None)
    ctx = RequestContext(time.time_ns(), time.perf_counter(), trace_id, new_span_id(), parent_span)
    for key, value in request.headers.items():
        lower = key.lower()
        if lower in SECRET_HEADERS:
            continue
        ctx.headers[lower] = value
        if lower.startswith("x-airlock-"):
            if lower.startswith(ATTR_PREFIX):
                name = lower[len(ATTR_PREFIX) :]
                if name:
                    ctx.attributes[name] = value
            elif lower in _HEADER_COLUMNS:
                ctx.columns[_HEADER_COLUMNS[lower]] = value
    return ctx
