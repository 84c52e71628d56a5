"""The HTTP/1.1 connection below the application: client timeouts, and aiohttp's own refusals.

aiohttp answers a request it cannot parse (bad header bytes, a CR in the target, a repeated
Content-Length, oversized headers, TLS bytes on the plain port) before any middleware runs, as
text/plain that quotes the offending line, and logs a traceback that quotes it again (an Authorization
header included). Here those become problem+json with a request id, logged in one line that names what
was wrong and never the bytes. aiohttp also has no deadline for a request's headers or body: a client
that sends half its headers, or declares a body and never sends it, holds the connection open until the
keep-alive timeout. Here both have deadlines (408, then the connection is closed); the keep-alive
timeout itself is aiohttp's `keepalive_timeout`, passed through the runner.

The classes hook into aiohttp where it has no public seam: the runner builds the server (the protocol
factory) from the one aiohttp made for the application, and the server builds these connections.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
)
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from airlock.errors import PROBLEM_CONTENT_TYPE, AirlockError, BadRequest, HeadersTooLarge, RequestTimeout, problem_body
from airlock.gateway.context import fresh_context
from airlock.gateway.problems import problem_response
from airlock.record.ids import new_span_id

log = logging.getLogger("airlock.gateway")

# llhttp (aiohttp's C parser) words its errors "<fixed reason>:\n\n  <the offending bytes>\n  ^"; the
# reason alone is safe to repeat, the rest is the client's data and may hold a key.
_PARSER_REASON = re.compile(r"([A-Za-z][A-Za-z -]{0,80}):\n")


@dataclass(frozen=True)
class ClientTimeouts:
    """Deadlines for a client's request, in seconds: all its headers from their first byte, and its whole
    body from the end of its headers."""

    headers_s: float
    body_s: float


def refusal_for(exc: HttpProcessingError) -> AirlockError:
    """The error to answer for a request aiohttp could not parse, worded without any of its bytes."""
    if isinstance(exc, LineTooLong) or exc.message.startswith("Too many headers"):
        return HeadersTooLarge("a header line or the request line is too long, or there are too many headers")
    if isinstance(exc, BadHttpMethod):
        if exc.message.startswith("Received HTTPS traffic"):
            return BadRequest("TLS was sent to a plain-HTTP port; use http://, or put TLS in front of the gateway")
        return BadRequest("the request line does not start with a valid HTTP method")
    reason = _PARSER_REASON.match(exc.message)
    if reason:
        return BadRequest(f"malformed HTTP request: {reason.group(1)}")
    if isinstance(exc, InvalidURLError):
        return BadRequest("malformed HTTP request: the request target is not a valid URL")
    if isinstance(exc, InvalidHeader):
        return BadRequest("malformed HTTP request: a header is not valid")
    if isinstance(exc, BadStatusLine):
        return BadRequest("malformed HTTP request: the request line is not valid")
    return BadRequest("malformed HTTP request")


def _raw_problem(err: AirlockError) -> bytes:
    """A whole HTTP response for `err`, for writing straight to a transport when no handler is answering."""
    request_id = new_span_id()
    body = problem_body(err, instance=f"/requests/{request_id}")
    head = (
        f"HTTP/1.1 {err.status} {HTTPStatus(err.status).phrase}\r\nContent-Type: {PROBLEM_CONTENT_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\nx-request-id: {request_id}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedRequestHandler(RequestHandler):
    """One client connection: aiohttp's, plus the header and body deadlines and problem+json refusals."""

    __slots__ = ("_awaiting_headers", "_body", "_deadline", "_timeouts")

    def __init__(
        self, manager: web.Server, *, loop: asyncio.AbstractEventLoop, timeouts: ClientTimeouts, **kwargs: Any
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._timeouts = timeouts
        self._awaiting_headers = True  # no request's headers are under way or parsed but not yet answered
        self._deadline: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # the body being received, while it has a deadline

    def data_received(self, data: bytes) -> None:
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:  # a request's headers are complete (or were refused)
            self._awaiting_headers = False
            self._cancel_deadline()
            payload = self._messages[-1][1] if self._messages else EMPTY_PAYLOAD
            if payload is not EMPTY_PAYLOAD and not payload.is_eof():
                self._body = payload
                self._deadline = self._loop.call_later(self._timeouts.body_s, self._body_expired)
        elif self._body is not None:
            if self._body.is_eof():
                self._body = None
                self._cancel_deadline()
        elif data and self._awaiting_headers and self._deadline is None:
            self._deadline = self._loop.call_later(self._timeouts.headers_s, self._headers_expired)

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        answered = await super().finish_response(request, resp, start_time)
        self._awaiting_headers = not self._messages and self._body is None
        return answered

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_deadline()
        self._body = None
        super().connection_lost(exc)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_expired(self) -> None:
        self._deadline = None
        if self._awaiting_headers and self.transport is not None:
            self._time_out(f"the request's headers did not all arrive within {self._timeouts.headers_s:g} s", True)

    def _body_expired(self) -> None:
        self._deadline = None
        body, self._body = self._body, None
        if body is not None and not body.is_eof() and self.transport is not None:
            # Answered only while its handler is still waiting for it: once a response has begun, or after
            # it (aiohttp reading out the rest of an unread body), the connection is just closed.
            request = self._current_request
            answer = request is not None and request.writer.output_size == 0
            self._time_out(f"the request's body did not all arrive within {self._timeouts.body_s:g} s", answer)

    def _time_out(self, detail: str, answer: bool) -> None:
        """Answer 408 if `answer`, and close the connection (a handler still reading the body is cancelled
        with it)."""
        transport = self.transport
        if transport is not None and answer:
            transport.write(_raw_problem(RequestTimeout(detail)))
        log.info("closed a connection from %s: %s", self.peername, detail)
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        err = refusal_for(exc)
        ctx = fresh_context()
        request_id = ctx.request_id
        log.warning(
            "refused a request from %s that is not valid HTTP: %s (%d, request %s)",
            request.remote,
            err.detail,
            err.status,
            request_id,
        )
        response = problem_response(err, ctx)
        response.force_close()
        return response


class GuardedServer(web.Server):
    """aiohttp's protocol factory for one application, making GuardedRequestHandler connections."""

    def __init__(self, base: web.Server, timeouts: ClientTimeouts) -> None:
        super().__init__(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=base._loop,
            **base._kwargs,
        )
        self._timeouts = timeouts

    def __call__(self) -> GuardedRequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, timeouts=self._timeouts, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """An AppRunner whose connections are GuardedRequestHandlers. Pass the idle timeout as aiohttp's own
    `keepalive_timeout`."""

    __slots__ = ("_timeouts",)

    def __init__(self, app: web.Application, *, timeouts: ClientTimeouts, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._timeouts = timeouts

    async def _make_server(self) -> web.Server:
        return GuardedServer(await super()._make_server(), self._timeouts)
