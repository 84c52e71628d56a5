"""RateBuckets, BudgetCounters and IdempotencyKeys on Redis, shared by every replica that names the
same server and prefix. Each operation is one Lua script (see `scripts`); every key lives under the
prefix and expires when it no longer says anything (a full bucket, an ended window, an expired key).

Keys: PREFIX bucket:KEY, PREFIX budget:WINDOW_S:KEY, PREFIX idem:LEN(SCOPE):SCOPE:KEY (the scope's
length keeps a scope holding ':' from meeting another scope's keys).
"""

from __future__ import annotations

from typing import Any

from airlock.errors import StoreConflict, StoreUnavailable
from airlock.store.limits import BucketAnswer, BudgetAnswer, Claim, check_bucket, check_window, emission_us, micros
from airlock.store.redis import scripts
from airlock.store.redis.connection import DEFAULT_TIMEOUT_S, connect, redact, redis_errors


def _now_arg(now: float | None, to_micros: bool = False) -> str:
    if now is None:
        return ""
    return str(micros(now)) if to_micros else repr(float(now))


class RedisLimits:
    """The three limit stores on one Redis client (its connection pool is shared by threads)."""

    def __init__(self, url: str, prefix: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url
        self.prefix = prefix
        self._client = connect(url, timeout_s)
        self._bucket = self._client.register_script(scripts.BUCKET)
        self._budget = self._client.register_script(scripts.BUDGET)
        self._claim = self._client.register_script(scripts.CLAIM)
        self._complete = self._client.register_script(scripts.COMPLETE)
        self._release = self._client.register_script(scripts.RELEASE)

    def __repr__(self) -> str:
        return f"RedisLimits({redact(self.url)!r}, prefix={self.prefix!r})"

    def check(self) -> None:
        """Raise StoreUnavailable, naming Redis and its URL without the password, unless the server
        answers and runs scripts (what `serve` asks before it starts)."""
        with redis_errors("checking that it answers", self.url):
            self._client.ping()
            self._bucket(keys=[self.prefix + "check"], args=[1, 1, 0, "", "0", scripts.GRACE_MS])

    def close(self) -> None:
        self._client.close()

    def _run(self, what: str, script: Any, key: str, args: list[Any]) -> Any:
        with redis_errors(what, self.url):
            return script(keys=[key], args=args)

    # RateBuckets

    def take(self, key: str, rate_per_s: float, burst: int, cost: float = 1, now: float | None = None) -> BucketAnswer:
        check_bucket(rate_per_s, burst, cost)
        args = [emission_us(rate_per_s), burst, repr(float(cost)), _now_arg(now, True), "0", scripts.GRACE_MS]
        return self._bucket_answer(self._run(f"taking from rate bucket {key!r}", self._bucket, self._b(key), args))

    def correct(self, key: str, rate_per_s: float, burst: int, delta: float, now: float | None = None) -> BucketAnswer:
        check_bucket(rate_per_s, burst, 0)
        args = [emission_us(rate_per_s), burst, repr(float(delta)), _now_arg(now, True), "1", scripts.GRACE_MS]
        return self._bucket_answer(self._run(f"correcting rate bucket {key!r}", self._bucket, self._b(key), args))

    def _b(self, key: str) -> str:
        return f"{self.prefix}bucket:{key}"

    @staticmethod
    def _bucket_answer(reply: list[int]) -> BucketAnswer:
        allowed, remaining, wait_us, ahead_us = (int(x) for x in reply)
        return BucketAnswer(allowed == 1, remaining, wait_us / 1e6, ahead_us / 1e6)

    # BudgetCounters

    def add(
        self, key: str, amount: float, limit: float | None, window_s: float, now: float | None = None
    ) -> BudgetAnswer:
        check_window(window_s)
        args = [
            repr(float(amount)),
            "" if limit is None else repr(float(limit)),
            repr(float(window_s)),
            _now_arg(now),
            "0",
            scripts.GRACE_MS,
        ]
        reply = self._run(f"adding to budget counter {key!r}", self._budget, self._w(key, window_s), args)
        return BudgetAnswer(int(reply[0]) == 1, float(reply[1]), float(reply[2]))

    def total(self, key: str, window_s: float, now: float | None = None) -> float:
        check_window(window_s)
        args = ["0", "", repr(float(window_s)), _now_arg(now), "1", scripts.GRACE_MS]
        reply = self._run(f"reading budget counter {key!r}", self._budget, self._w(key, window_s), args)
        return float(reply[1])

    def _w(self, key: str, window_s: float) -> str:
        return f"{self.prefix}budget:{float(window_s)!r}:{key}"

    # IdempotencyKeys

    def claim(self, scope: str, key: str, request_sha: str, ttl_s: float, now: float | None = None) -> Claim:
        what = f"claiming idempotency key {key!r} of {scope!r}"
        reply = self._run(
            what, self._claim, self._k(scope, key), [request_sha, repr(float(ttl_s)), _now_arg(now), scripts.GRACE_MS]
        )
        state = bytes(reply[0]).decode()
        if state == "completed":
            return Claim("completed", bytes(reply[1]) if reply[1] is not None else b"")
        if state == "new":
            return Claim("new")
        if state == "in_progress":
            return Claim("in_progress")
        if state == "mismatch":
            return Claim("mismatch")
        raise StoreUnavailable(f"Redis at {redact(self.url)}: {what}: the script answered {state!r}")

    def complete(self, scope: str, key: str, response: bytes, now: float | None = None) -> None:
        what = f"completing idempotency key {key!r} of {scope!r}"
        if self._run(what, self._complete, self._k(scope, key), [response, _now_arg(now)]) != 1:
            raise StoreConflict(f"idempotency key {key!r} of {scope!r} is not in progress: nothing to complete")

    def release(self, scope: str, key: str, now: float | None = None) -> None:
        self._run(f"releasing idempotency key {key!r} of {scope!r}", self._release, self._k(scope, key), [])

    def _k(self, scope: str, key: str) -> str:
        return f"{self.prefix}idem:{len(scope)}:{scope}:{key}"
