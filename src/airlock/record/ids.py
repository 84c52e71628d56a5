"""Trace and span ids, and W3C traceparent (https://www.w3.org/TR/trace-context/)."""

from __future__ import annotations

import os
import random
import re

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


# Ids need to be unique, not secret: a seeded Mersenne Twister (as the OpenTelemetry SDK uses) costs
# a tenth of os.urandom's system call. Reseeded after fork so worker processes never share a stream.
_rng = random.Random()
os.register_at_fork(after_in_child=_rng.seed)


def new_trace_id() -> str:
    return f"{_rng.getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    return f"{_rng.getrandbits(64) or 1:016x}"


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """(trace_id, parent_span_id) from a valid traceparent header, else None (the spec says: ignore it)."""
    if not value:
        return None
    m = _TRACEPARENT.match(value.strip().lower())
    if not m or m.group(1) == "ff":
        return None
    trace_id, parent = m.group(2), m.group(3)
    if trace_id == "0" * 32 or parent == "0" * 16:
        return None
    return trace_id, parent


def format_traceparent(trace_id: str, span_id: str, sampled: bool = True) -> str:
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"
