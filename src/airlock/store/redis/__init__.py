"""The Redis backend: rate buckets, budget counters and idempotency keys that every gateway replica
shares (`airlock.store.limits` says what each operation answers).

The composition root calls, once per process::

    limits = open_redis(os.environ[url_env], prefix="airlock:")   # nothing sent yet
    limits.check()        # at start-up: StoreUnavailable naming Redis (never its password) if it is not there
    buckets: RateBuckets = limits; budgets: BudgetCounters = limits; keys: IdempotencyKeys = limits

and wraps them in `airlock.store.fail_policy` to say what a request gets while Redis is away. redis-py
is imported here only, when a client is made.
"""

from __future__ import annotations

from airlock.store.redis.connection import DEFAULT_TIMEOUT_S
from airlock.store.redis.limits import RedisLimits


def open_redis(url: str, prefix: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> RedisLimits:
    """The limit stores on the Redis at `url` (redis://, rediss:// or unix://), every key under
    `prefix`. Connects lazily; raises StoreUnavailable only for a URL that cannot be used."""
    return RedisLimits(url, prefix, timeout_s)


__all__ = ["RedisLimits", "open_redis"]
