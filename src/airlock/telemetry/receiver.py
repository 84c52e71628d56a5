"""POST /v1/traces: OTLP/HTTP in. Authenticated with the gateway's bearer keys (the key names the
tenant), gzip-encoded bodies accepted, protobuf or JSON by content type. Each span becomes a span row
handed to the recorder exactly as the gateway's own records are, so it lands in the same segments and
joins the gateway's spans by trace id. The answer is OTLP's partial success, in the request's encoding."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from airlock.errors import (
    AirlockError,
    BadRequest,
    PayloadTooLarge,
    RecorderUnavailable,
    UnsupportedMediaType,
)
from airlock.gateway.context import context_from
from airlock.gateway.state import GatewayState
from airlock.telemetry.otlp_in import DECODERS, Decoded, OtlpDecodeError

_ENCODINGS = ("", "identity", "gzip", "deflate")  # aiohttp's server decodes gzip and deflate bodies


def _answer(decoded: Decoded, protobuf: bool, request_id: str) -> web.Response:
    message = "; ".join(decoded.reasons)
    headers = {"x-request-id": request_id}
    if protobuf:
        response = ExportTraceServiceResponse()
        if decoded.rejected:
            response.partial_success.rejected_spans = decoded.rejected
            response.partial_success.error_message = message
        return web.Response(body=response.SerializeToString(), content_type="application/x-protobuf", headers=headers)
    doc: dict[str, Any] = {}
    if decoded.rejected:
        doc["partialSuccess"] = {"rejectedSpans": str(decoded.rejected), "errorMessage": message}
    return web.Response(body=orjson.dumps(doc), content_type="application/json", headers=headers)


async def _read(request: web.Request, limit: int) -> bytes:
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in _ENCODINGS:
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; send gzip or none")
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body of {request.content_length} bytes is over the limit of {limit}", limit=limit)
    try:
        return await request.read()  # decompressed; the size limit applies to what it decompresses to
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"body is over the limit of {limit} bytes (after decompression)", limit=limit) from None
    except RequestPayloadError:
        raise BadRequest(f"the body is not valid {encoding or 'data'}: it could not be decoded") from None


def _record_refusal(state: GatewayState, request: web.Request, request_id: str, err: AirlockError) -> None:
    """A refused export is itself recorded, as the gateway records the requests it rejects."""
    if isinstance(err, RecorderUnavailable):
        return
    now = time.time_ns()
    state.recorder.submit(
        {
            "trace_id": f"{int(request_id, 16):032x}",
            "span_id": request_id,
            "request_id": request_id,
            "kind": "gateway.reject",
            "name": "otlp.traces",
            "start_ns": now,
            "end_ns": now,
            "status": "error",
            "http_status": err.status,
            "error_type": err.slug,
            "error_message": err.detail[:1000],
            "airlock.source": "otlp",
            "_raw_headers": request.raw_headers,
        }
    )


def otlp_traces_handler(state: GatewayState) -> Any:
    """The aiohttp handler for POST /v1/traces."""

    async def handle(request: web.Request) -> web.Response:
        request_id = context_from(request).request_id
        metrics = state.metrics.otlp
        try:
            tenant = state.auth.tenant_for(request.headers.get("Authorization"))
            content_type = request.content_type.lower()
            decode = DECODERS.get(content_type)
            if decode is None:
                raise UnsupportedMediaType(
                    f"Content-Type {content_type!r} is not OTLP; send application/x-protobuf or application/json"
                )
            if not state.recorder.accepting:
                raise RecorderUnavailable(f"recorder error: {state.recorder.error}")
            body = await _read(request, state.config.server.max_body_bytes)
            try:
                decoded = decode(body)
            except OtlpDecodeError as e:
                raise BadRequest(str(e)) from None
            except RecursionError:
                raise BadRequest("the payload nests values too deeply") from None
        except AirlockError as e:  # counted and recorded here; answered by the error boundary
            metrics["requests_rejected"] += 1
            _record_refusal(state, request, request_id, e)
            raise
        received_ns = time.time_ns()
        futures = []
        for row in decoded.rows:
            row["airlock.tenant"] = tenant
            row["request_id"] = request_id
            if row.get("start_ns") is None:
                row["start_ns"] = received_ns
            fut = state.recorder.submit(row)
            if fut is not None:
                futures.append(fut)
        metrics["accepted"] += len(decoded.rows)
        metrics["rejected"] += decoded.rejected
        if futures:  # durable mode: acknowledge only what reached the write-ahead file
            try:
                await asyncio.wait_for(asyncio.gather(*futures), state.durable_wait_s)
            except (TimeoutError, OSError) as e:
                raise RecorderUnavailable(f"the spans could not be made durable: {e}") from None
        return _answer(decoded, decode is not DECODERS["application/json"], request_id)

    return handle
