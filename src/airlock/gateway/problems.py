"""An HTTP answer for an AirlockError: RFC 9457 problem+json with the request id, for every surface the
gateway serves (model API, ledger, energy readings, OTLP)."""

from __future__ import annotations

from aiohttp import web

from airlock.errors import PROBLEM_CONTENT_TYPE, AirlockError, problem_body
from airlock.record.ids import new_span_id


def problem_response(err: AirlockError, request_id: str | None = None) -> web.Response:
    request_id = request_id or new_span_id()
    return web.Response(
        status=err.status,
        body=problem_body(err, instance=f"/requests/{request_id}"),
        content_type=PROBLEM_CONTENT_TYPE,
        headers={"x-request-id": request_id},
    )
