"""Airlock's error tree, and its translation to RFC 9457 problem details.

    AirlockError                      base; carries an HTTP status and a problem type
    ├── ConfigError                   airlock.yaml refused (names the key and the line)
    ├── BadRequest          400       malformed JSON, missing fields
    ├── Unauthorized        401       missing or unknown API key
    ├── ModelNotFound       404       no route serves the model asked for
    ├── Conflict            409       an idempotent write repeated with a different body
    ├── PayloadTooLarge     413       body over server.max_body_bytes
    ├── Unprocessable       422       well-formed JSON that fails validation (lists each error)
    ├── UnsupportedMediaType 415      a body in a content type or encoding the endpoint does not take
    ├── RecorderUnavailable 503       recorder cannot persist and policy says refuse
    ├── InternalError       500       a defect; logged with its traceback, recorded, answered as problem+json
    ├── EgressRefused                 a destination outside the configured allow-list
    └── UpstreamsExhausted  502       every upstream of the route failed (carries the hops)

Every HTTP surface translates these in one place (`problem_body`); nothing else builds error bodies.
"""

from __future__ import annotations

from typing import Any

import orjson

PROBLEM_CONTENT_TYPE = "application/problem+json"


class AirlockError(Exception):
    status: int = 500
    slug: str = "internal"
    title: str = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class ConfigError(AirlockError):
    slug = "config"
    title = "Invalid configuration"


class BadRequest(AirlockError):
    status = 400
    slug = "bad-request"
    title = "Malformed request"


class Unauthorized(AirlockError):
    status = 401
    slug = "unauthorized"
    title = "Missing or unknown API key"


class ModelNotFound(AirlockError):
    status = 404
    slug = "model-not-found"
    title = "No route serves this model"


class NotFound(AirlockError):
    status = 404
    slug = "not-found"
    title = "Not found"


class MethodNotAllowed(AirlockError):
    status = 405
    slug = "method-not-allowed"
    title = "Method not allowed"


class Conflict(AirlockError):
    status = 409
    slug = "conflict"
    title = "Conflicts with what was already accepted"


class Unprocessable(AirlockError):
    status = 422
    slug = "validation"
    title = "The request did not validate"


class PayloadTooLarge(AirlockError):
    status = 413
    slug = "payload-too-large"
    title = "Request body too large"


class UnsupportedMediaType(AirlockError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported content type or encoding"


class RecorderUnavailable(AirlockError):
    status = 503
    slug = "recorder-unavailable"
    title = "The recorder cannot persist records and policy refuses unrecorded traffic"


class InternalError(AirlockError):
    status = 500
    slug = "internal"
    title = "Internal error in the gateway"


class EgressRefused(AirlockError):
    status = 502
    slug = "egress-refused"
    title = "Destination is not a configured upstream"


class UpstreamsExhausted(AirlockError):
    status = 502
    slug = "upstreams-exhausted"
    title = "Every upstream of the route failed"


def problem_body(err: AirlockError, instance: str | None = None) -> bytes:
    """The RFC 9457 body for an error: type, title, status, detail, plus the error's extras."""
    body: dict[str, Any] = {
        "type": f"urn:airlock:problem:{err.slug}",
        "title": err.title,
        "status": err.status,
        "detail": err.detail,
    }
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in err.extra.items() if not k.startswith("_")})
    return orjson.dumps(body)
