"""The OpenAI-compatible model endpoints. One handler serves chat completions, completions and
embeddings, as typed stages: authenticate, read and parse, select the route (with its reason), the
guards (pre-flight first; each returns a verdict), forward with failover, relay (streaming or not),
and hand the exchange to the recorder after the response, never before (except in durable mode,
where the response waits for the write-ahead file). The route's decision and every guard's verdict
go on the span, in `airlock.decisions`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from airlock.errors import (
    AirlockError,
    BadRequest,
    InternalError,
    PayloadTooLarge,
    RecorderUnavailable,
    UpstreamsExhausted,
)
from airlock.gateway.context import context_from
from airlock.gateway.forward import Answer, _CancelledWithHops
from airlock.gateway.problems import problem_response, trace_headers
from airlock.gateway.routing import ResolvedRoute, ResolvedTarget
from airlock.gateway.sse import UsageFilter
from airlock.gateway.state import GatewayState
from airlock.gateway.validation import check_nesting, check_stream_options, check_token_limits
from airlock.record.ids import format_traceparent

log = logging.getLogger("airlock.gateway")

_PASS_HEADERS = ("Content-Type", "openai-processing-ms", "x-ratelimit-remaining-requests")


@dataclass(frozen=True)
class Endpoint:
    name: str  # metrics label
    path: str  # upstream path under base_url
    kind: str  # span kind
    operation: str  # gen_ai.operation.name
    streams: bool


CHAT = Endpoint("chat", "/chat/completions", "model.chat", "chat", True)
COMPLETIONS = Endpoint("completions", "/completions", "model.completion", "text_completion", True)
EMBEDDINGS = Endpoint("embeddings", "/embeddings", "model.embedding", "embeddings", False)


class ModelCall:
    """One exchange, from request to record."""

    def __init__(self, state: GatewayState, endpoint: Endpoint, request: web.Request) -> None:
        self.state = state
        self.ep = endpoint
        self.request = request
        self.ctx = context_from(request)
        self.traceparent = format_traceparent(self.ctx.trace_id, self.ctx.span_id)
        self.record: dict[str, Any] = {}
        self.decisions: list[dict[str, Any]] = []  # the route's, then each guard's, in order
        self.body: dict[str, Any] = {}
        self.raw = b""
        self.route: ResolvedRoute | None = None
        self.payloads: dict[str, bytes] = {}
        self.hops: list[dict[str, Any]] = []
        self.ttft_ms: float | None = None
        self.http_status = 500
        self._committed = False
        self._streaming = False  # a streamed response has been started

    # -- what guards see (airlock.guards.GuardedCall) ----------------------------------------------

    @property
    def kind(self) -> str:
        return self.ep.name

    @property
    def tenant(self) -> str | None:
        return self.ctx.tenant

    @property
    def headers(self) -> Mapping[str, str]:
        return self.request.headers

    def replace_body(self, body: dict[str, Any], raw: bytes) -> None:
        self.body, self.raw = body, raw

    # -- steps -----------------------------------------------------------------------------------

    def authenticate(self) -> None:
        self.ctx.tenant = self.state.auth.tenant_for(self.request.headers.get("Authorization"))
        if not self.state.recorder.accepting:
            raise RecorderUnavailable(f"recorder error: {self.state.recorder.error}")

    def select_route(self) -> ResolvedRoute:
        route = self.state.router.resolve(self.body["model"])
        self.route = route
        self.record["airlock.route"] = route.name
        self.decisions.append(self.state.router.decision(route))
        return route

    async def read_body(self) -> bytes:
        limit = self.state.config.server.max_body_bytes
        length = self.request.content_length
        if length is not None and length > limit:
            raise PayloadTooLarge(f"body of {length} bytes is over the limit of {limit}", limit=limit)
        try:
            raw = await self.request.read()
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge(f"body is over the limit of {limit} bytes", limit=limit) from None
        self.payloads["airlock.payload.request"] = raw
        return raw

    def parse(self, raw: bytes) -> dict[str, Any]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise BadRequest(f"body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        check_nesting(raw, body)  # before anything walks, counts or re-encodes the body
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("'model' is required and must be a string")
        if self.ep is CHAT and not isinstance(body.get("messages"), list):
            raise BadRequest("'messages' is required and must be a list")
        if self.ep is COMPLETIONS and "prompt" not in body:
            raise BadRequest("'prompt' is required")
        if self.ep is EMBEDDINGS and "input" not in body:
            raise BadRequest("'input' is required")
        if self.ep.streams:
            check_stream_options(body)
            check_token_limits(body)
        self.record["gen_ai.request.model"] = model  # the rest of the request is read by the recorder
        return body

    def body_maker(self, raw: bytes, body: dict[str, Any], stream: bool) -> tuple[Any, bool]:
        """A function giving the bytes to send each target, and whether usage was injected.
        The client's bytes go out untouched unless the model name or stream usage must change."""
        inject = False
        if stream and self.state.config.recorder.stream_usage == "inject":
            opts = body.get("stream_options")
            inject = not (isinstance(opts, dict) and opts.get("include_usage"))
        cache: dict[str, bytes] = {}

        def for_target(target: ResolvedTarget) -> bytes:
            if target.upstream_model == body["model"] and not inject:
                return raw
            if target.upstream_model not in cache:
                out = dict(body)
                out["model"] = target.upstream_model
                if inject:
                    opts = dict(out.get("stream_options") or {})
                    opts["include_usage"] = True
                    out["stream_options"] = opts
                cache[target.upstream_model] = orjson.dumps(out)
            return cache[target.upstream_model]

        return for_target, inject

    # -- the whole exchange ----------------------------------------------------------------------

    async def run(self) -> web.StreamResponse:
        st = self.state
        st.metrics.in_flight += 1
        self.record["status"] = "ok"
        try:
            self.authenticate()
            self.raw = await self.read_body()
            self.body = self.parse(self.raw)
            route = self.select_route()
            await st.guards.run(self, self.decisions)
            raw, body = self.raw, self.body
            stream = self.ep.streams and body.get("stream") is True
            self.record["airlock.request.stream"] = stream
            body_for, injected = self.body_maker(raw, body, stream)
            answer = await st.forwarder.send(
                (self.ctx.trace_id, self.ctx.span_id), route, self.ep.path, body_for, stream, self.traceparent
            )
            self.hops = answer.hops
            self._served_by(answer)
            if answer.response is not None:
                return await self.relay_stream(answer, injected)
            return await self.reply(answer)
        except _CancelledWithHops as e:
            self.hops = e.hops
            self._cancelled("client disconnected before the upstream answered")
            raise
        except asyncio.CancelledError:
            self._cancelled("client disconnected")
            raise
        except Exception as e:
            if not isinstance(e, AirlockError):
                log.exception("request %s failed", self.ctx.request_id)
                if self._streaming:  # the status line is out: no problem document can follow; cut the stream
                    if not self._committed:  # a record handed over is not changed afterwards
                        self.record.update(status="error", error_type="internal", error_message=type(e).__name__)
                        self._committed = True
                        self.state.recorder.submit(self.build_record())
                    self._abort()
                    raise
                e = InternalError(f"{type(e).__name__} in the gateway; see its log for request {self.ctx.request_id}")
            if isinstance(e, UpstreamsExhausted):
                self.hops = e.extra.get("_hops", [])
            self.http_status = e.status
            if not self._committed:
                self.record.update(status="error", error_type=e.slug, error_message=e.detail[:1000])
                if self.record.get("gen_ai.request.model") is None or e.status in (400, 401, 413):
                    self.record["kind"] = "gateway.reject"
                await self.commit()
            return problem_response(e, self.ctx)
        finally:
            st.metrics.in_flight -= 1
            st.metrics.request_done(self.ep.name, self.http_status, self.ctx.elapsed_ms())

    def _served_by(self, answer: Answer) -> None:
        up = answer.target.upstream
        self.record.update(
            {
                "airlock.upstream": up.name,
                "airlock.upstream.region": up.region,
                "airlock.upstream.jurisdiction": up.jurisdiction,
                "airlock.attempts": len(answer.hops),
                "airlock.upstream.model": answer.target.upstream_model,
                "_tokenizer": answer.target.model.tokenizer,  # the recorder counts locally with it
            }
        )
        self.payloads["airlock.payload.upstream_request"] = answer.sent

    def _headers(self) -> dict[str, str]:
        return trace_headers(self.ctx)

    async def reply(self, answer: Answer) -> web.Response:
        assert answer.body is not None
        self.http_status = answer.status
        self.payloads["airlock.payload.response"] = answer.body
        self.record["_response_format"] = "json"
        if answer.status >= 400:
            self.record.update(status="error", error_type=f"upstream_http_{answer.status}")
        headers = self._headers()
        for h in _PASS_HEADERS:
            if h in answer.headers:
                headers[h] = answer.headers[h]
        await self.commit()
        return web.Response(status=answer.status, body=answer.body, headers=headers)

    async def relay_stream(self, answer: Answer, injected: bool) -> web.StreamResponse:
        upstream = answer.response
        assert upstream is not None
        self.http_status = 200
        self.record["_response_format"] = "sse"
        headers = self._headers()
        headers.update({"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        out = web.StreamResponse(status=200, headers=headers)
        chunks: list[bytes] = []
        usage_filter = UsageFilter() if injected else None
        writing = True
        try:
            await out.prepare(self.request)
            self._streaming = True
            writing = False
            async for chunk in upstream.content.iter_any():
                chunks.append(chunk)
                data = usage_filter.feed(chunk) if usage_filter else chunk
                if data:
                    writing = True
                    await out.write(data)
                    writing = False
                    if self.ttft_ms is None:
                        self.ttft_ms = self.ctx.elapsed_ms()
            if usage_filter and (rest := usage_filter.flush()):
                writing = True
                await out.write(rest)
                writing = False
        except asyncio.CancelledError:
            upstream.close()
            self.payloads["airlock.payload.response"] = b"".join(chunks)
            self._cancelled("client disconnected mid-stream; upstream call cancelled")
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            upstream.close()
            if writing:  # our write to the client failed: the client is gone
                self.payloads["airlock.payload.response"] = b"".join(chunks)
                self._cancelled("client disconnected mid-stream; upstream call cancelled")
                return out
            self.payloads["airlock.payload.response"] = b"".join(chunks)
            self.record.update(
                status="error", error_type="upstream_stream_broken", error_message=f"{type(e).__name__}: {e}"[:1000]
            )
            await self._commit_after_stream()
            self._abort()  # the client must see a broken stream, not a complete one
            return out
        finally:
            upstream.release()
        self.payloads["airlock.payload.response"] = b"".join(chunks)
        if await self._commit_after_stream():
            # A client that had every event may close before the chunked body's last bytes (an SDK that
            # stops at [DONE] does): the exchange is complete, and its record, already handed over, stands.
            with contextlib.suppress(ConnectionError):
                await out.write_eof()
        return out

    # -- recording -------------------------------------------------------------------------------

    def _abort(self) -> None:
        if self.request.transport is not None:
            self.request.transport.close()

    async def _commit_after_stream(self) -> bool:
        """Commit once the body is out. Its status line is long sent, so a record that cannot be made
        durable in time aborts the connection (never a second response inside the stream)."""
        try:
            await self.commit()
            return True
        except RecorderUnavailable:
            self._abort()
            return False

    def _cancelled(self, why: str) -> None:
        if self._committed:
            return
        self._committed = True
        self.http_status = 499  # client closed request (nginx's convention)
        self.record.update(status="cancelled", error_type="client_disconnected", error_message=why)
        self.state.recorder.submit(self.build_record())  # no awaiting inside a cancelled task

    def build_record(self) -> dict[str, Any]:
        ctx, r = self.ctx, self.record
        r.setdefault("kind", self.ep.kind)
        r.update(
            {
                "trace_id": ctx.trace_id,
                "span_id": ctx.span_id,
                "parent_span_id": ctx.parent_span_id,
                "request_id": ctx.request_id,
                "start_ns": ctx.start_ns,
                "end_ns": time.time_ns(),
                "ttft_ms": self.ttft_ms,
                "http_status": self.http_status,
                "airlock.tenant": ctx.tenant,
                "airlock.decisions": self.decisions or None,
                "gen_ai.operation.name": self.ep.operation,
                "_raw_headers": self.request.raw_headers,
                "_payloads": self.payloads,
                "_hops": self.hops,
            }
        )
        return r

    async def commit(self) -> None:
        self._committed = True
        fut = self.state.recorder.submit(self.build_record())
        if fut is not None:  # durable mode: the response waits for the write-ahead file
            try:
                await asyncio.wait_for(asyncio.shield(fut), self.state.durable_wait_s)
            except TimeoutError:
                raise RecorderUnavailable("the record could not be made durable in time") from None
            except OSError as e:
                raise RecorderUnavailable(f"the record could not be made durable: {e}") from None


def model_handler(state: GatewayState, endpoint: Endpoint) -> Any:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await ModelCall(state, endpoint, request).run()

    return handle
