"""The RateLimit-Policy and RateLimit fields of draft-ietf-httpapi-ratelimit-headers-11: Structured
Field lists whose items are the policy's name (a string) with parameters. Policy: q (quota), w (window
in seconds), qu (quota unit, "requests" by default so left out), pk (partition key, a byte sequence:
here a short digest of the partition, so a caller can tell its partitions apart without learning any
other's). State: r (remaining quota units), t (seconds until the quota is restored)."""

from __future__ import annotations

import base64
import hashlib
import math


def partition_key(partition: str) -> str:
    """The pk parameter: the first 9 bytes of the partition's SHA-256, as an sf-binary (:base64:)."""
    digest = hashlib.sha256(partition.encode()).digest()[:9]
    return ":" + base64.b64encode(digest).decode() + ":"


def policy_header(name: str, quota: int, window_s: float, partition: str | None = None) -> str:
    item = f'"{name}";q={quota};w={max(1, math.ceil(window_s))}'
    if partition is not None:
        item += f";pk={partition_key(partition)}"
    return item


def state_header(name: str, remaining: int, reset_s: float, partition: str | None = None) -> str:
    item = f'"{name}";r={max(0, remaining)};t={max(0, math.ceil(reset_s))}'
    if partition is not None:
        item += f";pk={partition_key(partition)}"
    return item
