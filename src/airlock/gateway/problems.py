"""An HTTP answer for an AirlockError: RFC 9457 problem+json with the request id, for every surface the
gateway serves (model API, ledger, energy readings, OTLP). The error boundary (gateway/boundary.py) is
its one caller outside the model call, which answers its own errors so it can record them first."""

from __future__ import annotations

from aiohttp import web

from airlock.errors import (
    PROBLEM_CONTENT_TYPE,
    AirlockError,
    BadRequest,
    Conflict,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unprocessable,
    UnsupportedMediaType,
    problem_body,
)
from airlock.gateway.context import RequestContext
from airlock.record.ids import format_traceparent

_BY_STATUS: dict[int, type[AirlockError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: Unprocessable,
}


def trace_headers(ctx: RequestContext) -> dict[str, str]:
    """The headers every response carries: the request id and the W3C traceparent of the gateway's span."""
    return {"x-request-id": ctx.request_id, "traceparent": format_traceparent(ctx.trace_id, ctx.span_id)}


def problem_response(err: AirlockError, ctx: RequestContext) -> web.Response:
    """The problem+json response for `err`, its `instance` naming the request, with the trace headers
    and any headers the error carries (`_headers`: Retry-After, RateLimit, ...)."""
    headers = trace_headers(ctx)
    headers.update(err.extra.get("_headers") or {})
    return web.Response(
        status=err.status,
        body=problem_body(err, instance=f"/requests/{ctx.request_id}"),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def error_for_http(exc: web.HTTPException) -> AirlockError:
    """The AirlockError that says what an aiohttp HTTP error (raised by routing or by request.read) says,
    so it is answered as problem+json like every other error."""
    detail = exc.text or exc.reason
    cls = _BY_STATUS.get(exc.status)
    if cls is not None:
        return cls(detail)
    err = AirlockError(detail)  # a status the tree has no class for: keep aiohttp's status and reason
    err.status, err.slug, err.title = exc.status, f"http-{exc.status}", exc.reason
    return err
