"""Checks on a model request's body that the gateway itself depends on, made once it is parsed and
before anything walks, re-encodes or counts it: how deep its JSON nests, and the types of the fields the
gateway reads (`stream_options`, `max_tokens`, `max_completion_tokens`). Each refusal is a BadRequest
that names the field."""

from __future__ import annotations

from typing import Any

from airlock.errors import BadRequest

# orjson parses up to 1,024 levels but encodes at most 254, and the gateway re-encodes a body whose model
# name or stream options it changes; legitimate requests (tool schemas included) nest a few dozen deep.
MAX_JSON_DEPTH = 128
# No model's context window comes near this; a larger count is a mistake, never a request to honour.
MAX_OUTPUT_TOKENS = 10_000_000
TOKEN_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens")


def check_nesting(raw: bytes, doc: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse a document nested more than `limit` containers deep (the top-level object is level 1).
    Iterative, so it cannot itself run out of stack; a body with no more than `limit` brackets in all
    cannot nest deeper, which spares the walk for almost every request."""
    if raw.count(b"{") + raw.count(b"[") <= limit:
        return
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    raise BadRequest(f"the body nests JSON more than {limit} levels deep", limit=limit)
                stack.append((child, depth + 1))


def check_stream_options(body: dict[str, Any]) -> None:
    """`stream_options`, when given, must be an object (the gateway may add `include_usage` to it)."""
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise BadRequest("'stream_options' must be an object", field="stream_options")


def check_token_limits(body: dict[str, Any]) -> None:
    """`max_tokens` and `max_completion_tokens`, when given, must be positive integers within bounds:
    pre-flight adds them to the prompt's count, and the upstream is billed by them."""
    for field in TOKEN_LIMIT_FIELDS:
        value = body.get(field)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_OUTPUT_TOKENS:
            raise BadRequest(
                f"'{field}' must be a positive integer of at most {MAX_OUTPUT_TOKENS:,}, not {value!r}"[:300],
                field=field,
            )
