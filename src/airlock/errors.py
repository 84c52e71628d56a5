"""Airlock's whole error tree, and its translation to RFC 9457 problem details.

    AirlockError                        base; carries an HTTP status and a problem type
    ├── ConfigError                     airlock.yaml refused (names the key and the line)
    ├── BadRequest            400       malformed JSON, missing fields
    │   ├── OtlpDecodeError   400       a body that is not an OTLP trace export request
    │   ├── QueryError        400       a query that cannot be run as asked (bad filter, unknown sort)
    │   ├── ReplayError       400       a replay that cannot run as asked
    │   └── ContextWindowExceeded 400   the request would not fit the model's context window
    ├── Unauthorized          401       missing or unknown API key
    ├── Forbidden             403       a known caller asking for what is not its own
    ├── NotFound              404       no such endpoint or object
    │   └── ModelNotFound     404       no route serves the model asked for
    ├── MethodNotAllowed      405
    ├── Conflict              409       an idempotent write repeated with a different body
    │   ├── ItemConflict      409       a ledger item id already stored with another body
    │   ├── ReadingConflict   409       an energy reading already stored with another value
    │   ├── GatewayRunning    409       an offline maintenance step while a writer holds the data directory
    │   └── AddressInUse      409       `serve` on a host:port another gateway (or program) already listens on
    ├── RequestTimeout        408       headers or body not received within the server's client timeouts
    ├── PayloadTooLarge       413       body over server.max_body_bytes
    ├── HeadersTooLarge       431       a header line (or the request line) too long, or too many headers
    ├── UnsupportedMediaType  415       a body in a content type or encoding the endpoint does not take
    ├── Unprocessable         422       well-formed JSON that fails validation (lists each error)
    ├── RateLimited           429       over a configured limit (Retry-After and RateLimit headers say when)
    ├── InternalError         500       a defect; logged with its traceback, recorded, answered as problem+json
    ├── TokenizerUnavailable  500       a tokenizer unknown, or its vocabulary file missing or altered
    ├── EgressRefused         502       a destination outside the configured allow-list
    ├── UpstreamsExhausted    502       every upstream of the route failed (carries the hops)
    ├── RecorderUnavailable   503       recorder cannot persist and policy says refuse
    │   └── RecorderStartError 503      the recorder's writer process could not start
    ├── EnergyUnavailable     503       no energy source can be read (no NVML, no GPU)
    └── StoreError            503       a storage backend failed; raised by `airlock.store` backends only
        ├── StoreUnavailable  503       the backend cannot be reached, read or written (down, disk full)
        ├── StoreConflict     409       a compare-and-set lost to another process
        └── BlobCorrupt       500       a stored payload whose bytes no longer hash to its name

Every HTTP surface translates these in one place (`problem_body`, used by the gateway's error
middleware); nothing else builds error bodies. Backends translate their libraries' errors (sqlite3,
duckdb, pyarrow, OSError) into the StoreError family, so no caller above `airlock.store` catches a
storage library's exception.
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


class Forbidden(AirlockError):
    status = 403
    slug = "forbidden"
    title = "Not permitted for this caller"


class NotFound(AirlockError):
    status = 404
    slug = "not-found"
    title = "Not found"


class ModelNotFound(NotFound):
    slug = "model-not-found"
    title = "No route serves this model"


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


class RequestTimeout(AirlockError):
    status = 408
    slug = "request-timeout"
    title = "The request did not arrive in time"


class HeadersTooLarge(AirlockError):
    status = 431
    slug = "headers-too-large"
    title = "Request header fields too large"


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


class OtlpDecodeError(BadRequest, ValueError):
    slug = "otlp-decode"
    title = "Not an OTLP trace export request"


class QueryError(BadRequest, ValueError):
    slug = "query"
    title = "The query cannot be run as asked"


class ReplayError(BadRequest):
    slug = "replay"
    title = "The replay cannot run"


class ContextWindowExceeded(BadRequest):
    slug = "context-window-exceeded"
    title = "The request would not fit the model's context window"


class ItemConflict(Conflict):
    def __init__(self, item_id: str) -> None:
        super().__init__(f"line item {item_id} was already stored with a different body", item_id=item_id)
        self.item_id = item_id


class ReadingConflict(Conflict):
    def __init__(self, reading: Any) -> None:
        super().__init__(f"a different reading is stored for {reading.device} at {reading.t_ns}")
        self.reading = reading


class GatewayRunning(Conflict):
    slug = "gateway-running"
    title = "A writer of this data directory is alive"


class AddressInUse(Conflict):
    slug = "address-in-use"
    title = "Another gateway or program listens on this address"


class TokenizerUnavailable(AirlockError, KeyError):
    slug = "tokenizer-unavailable"
    title = "A tokenizer is unknown or its vocabulary file is missing or altered"

    def __init__(self, detail: str = "tokenizer unavailable", **extra: Any) -> None:
        super().__init__(detail, **extra)

    def __str__(self) -> str:  # KeyError's own quotes its argument
        return self.detail


class RecorderStartError(RecorderUnavailable):
    slug = "recorder-start"
    title = "The recorder's writer process could not start"


class EnergyUnavailable(AirlockError):
    status = 503
    slug = "energy-unavailable"
    title = "No energy source can be read"


class RateLimited(AirlockError):
    """Over a limit. `retry_after_s` becomes the Retry-After header; the limit's RateLimit-Policy and
    RateLimit headers travel in the `_headers` extra (headers, not body)."""

    status = 429
    slug = "rate-limited"
    title = "Too many requests"


class StoreError(AirlockError):
    status = 503
    slug = "store"
    title = "A storage backend failed"


class StoreUnavailable(StoreError):
    slug = "store-unavailable"
    title = "A storage backend cannot be reached, read or written"


class StoreConflict(StoreError):
    status = 409
    slug = "store-conflict"
    title = "Another process changed this first"


class BlobCorrupt(StoreError):
    status = 500
    slug = "blob-corrupt"
    title = "A stored payload no longer matches its hash"


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
