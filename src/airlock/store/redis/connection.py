"""The Redis client the backend uses, and its failures as the errors.StoreError family.

A client fails fast rather than hang: half a second to connect and half a second for a reply, and
no retry inside redis-py (a retried take could charge twice, a retried claim could find its own key
and answer "in_progress"). A connection the server dropped is found when the pool hands it out and
replaced then, so a Redis that comes back is used again without anything being done.

No message carries the URL's password: `redact` replaces it, and `scrub` takes it out of any text a
library wrote.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from airlock.errors import StoreUnavailable

DEFAULT_TIMEOUT_S = 0.5


def _password(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        return parts.password or query.get("password") or None
    except ValueError:
        return None


def redact(url: str) -> str:
    """The URL with its password (in the authority or as ?password=) shown as ***; a URL without
    one is returned as it is."""
    if _password(url) is None:
        return url
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
        pairs = [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        query = f"?{urlencode(pairs, safe='*/')}" if pairs else ""
        return f"{parts.scheme}://{netloc}{parts.path}{query}"
    except ValueError:
        return "<a Redis URL that cannot be parsed>"


def scrub(text: str, url: str) -> str:
    """`text` with every occurrence of the URL's password replaced by ***."""
    password = _password(url)
    return text.replace(password, "***") if password else text


def connect(url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
    """A redis-py client for `url` (redis://, rediss:// or unix://) that gives up after `timeout_s`;
    nothing is sent until the first command. Raises StoreUnavailable for a URL redis-py refuses."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    try:
        return redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
        )
    except ValueError as e:
        raise StoreUnavailable(f"Redis at {redact(url)}: the URL is not usable: {scrub(str(e), url)}") from e


@contextmanager
def redis_errors(what: str, url: str) -> Iterator[None]:
    """Run the block; any failure of redis-py (unreachable, timed out, refused, out of memory, a
    read-only replica) raises StoreUnavailable naming Redis, the redacted URL and `what` was done."""
    import redis

    try:
        yield
    except redis.RedisError as e:
        detail = scrub(str(e), url) or type(e).__name__
        raise StoreUnavailable(f"Redis at {redact(url)}: {what}: {type(e).__name__}: {detail}") from e
