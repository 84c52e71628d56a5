"""The gateway's one HTTP error boundary, an aiohttp middleware around every handler.

It makes the request's context (ids, trace) before the handler runs, and stamps `x-request-id` and
`traceparent` on every response. An AirlockError a handler raises becomes RFC 9457 problem+json with its
status; an aiohttp HTTP error (404/405 from routing, 413 from request.read) becomes the same; anything
else is a defect: its traceback is logged once, with the request id, and the client gets a 500 problem
that names only the exception's type. Handlers just raise."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from airlock.errors import AirlockError, InternalError
from airlock.gateway.context import RequestContext, context_from
from airlock.gateway.problems import error_for_http, problem_response, trace_headers

log = logging.getLogger("airlock.gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_boundary(request: web.Request, handler: Handler) -> web.StreamResponse:
    ctx = context_from(request)
    try:
        response = await handler(request)
    except AirlockError as err:
        response = problem_response(err, ctx)
    except web.HTTPException as exc:
        if exc.status < 400:  # a redirect or an empty success raised as an exception: not an error
            _stamp(exc, ctx)
            raise
        response = problem_response(error_for_http(exc), ctx)
    except Exception as exc:
        if request.writer.output_size > 0:  # a response is partly sent: no problem document can follow
            raise
        log.exception("request %s failed: %s %s", ctx.request_id, request.method, request.path)
        detail = f"{type(exc).__name__} in the gateway; see its log for request {ctx.request_id}"
        response = problem_response(InternalError(detail), ctx)
    _stamp(response, ctx)
    return response


def _stamp(response: web.StreamResponse, ctx: RequestContext) -> None:
    """Add the trace headers a handler did not set itself (a started response's headers are sent)."""
    if response.prepared:
        return
    for name, value in trace_headers(ctx).items():
        response.headers.setdefault(name, value)
