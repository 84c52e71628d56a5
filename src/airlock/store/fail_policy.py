"""What a request gets while the store behind its limits cannot be reached: the fail policy.

`FailPolicy(mode="open")` admits, `FailPolicy(mode="closed")` refuses, and either way the answer says
so (`decided_by` is "fail-open" or "fail-closed", never "store"), so the verdict on the span can name
it. Wrap each store once: `policy.buckets(store)`, `policy.budgets(store)`, `policy.keys(store)`.

After a failure the policy answers on its own, without asking the store, for `probe_after_s`; the
next call after that asks the store again (a probe), and the first answer from it ends the outage.
So a Redis that hangs costs one timeout per probe interval rather than one per request, and a Redis
that comes back is used again on the next probe without anything being restarted.

Idempotency under the policy: "open" lets the request in unchecked (a claim with state "new" and
decided_by "fail-open", which holds no key: do not complete or release it); "closed" raises
StoreUnavailable, which the gateway answers with 503. What cannot be written while the store is away
(a correction, a settled amount, a completed response) is counted in `lost`, logged once per outage,
and raised under "closed".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Literal, TypeVar

from airlock.errors import StoreUnavailable
from airlock.store.limits import (
    BucketAnswer,
    BudgetAnswer,
    BudgetCounters,
    Claim,
    IdempotencyKeys,
    RateBuckets,
)

log = logging.getLogger("airlock.store")

T = TypeVar("T")


class FailPolicy:
    """Whether to admit ("open") or refuse ("closed") while the store is away, and the state of the
    current outage, shared by the stores it wraps. Thread-safe."""

    def __init__(
        self,
        mode: Literal["open", "closed"],
        probe_after_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in ("open", "closed"):
            raise ValueError(f"a fail policy is 'open' or 'closed', not {mode!r}")
        self.mode = mode
        self.probe_after_s = probe_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._next_probe: float | None = None  # None: the store is up
        self.decided = 0  # answers the policy gave instead of the store
        self.lost = 0  # writes that could not be made (corrections, settlements, responses)
        self.last_error: str | None = None

    @property
    def decided_by(self) -> Literal["fail-open", "fail-closed"]:
        return "fail-open" if self.mode == "open" else "fail-closed"

    @property
    def store_down(self) -> bool:
        """Whether the last call to the store failed and none has answered since."""
        with self._lock:
            return self._next_probe is not None

    def buckets(self, store: RateBuckets) -> PolicyBuckets:
        return PolicyBuckets(store, self)

    def budgets(self, store: BudgetCounters) -> PolicyBudgets:
        return PolicyBudgets(store, self)

    def keys(self, store: IdempotencyKeys) -> PolicyKeys:
        return PolicyKeys(store, self)

    def call(self, operation: Callable[[], T]) -> T | None:
        """The store's answer to `operation`, or None when the store is away (the call failed with
        StoreUnavailable, or an earlier one did and the next probe is not due yet)."""
        with self._lock:
            if self._next_probe is not None and self._clock() < self._next_probe:
                self.decided += 1
                return None
        try:
            answer = operation()
        except StoreUnavailable as e:
            self._failed(e)
            return None
        with self._lock:
            if self._next_probe is not None:
                log.warning("the store answers again; limits are decided by it, not the fail policy")
            self._next_probe = None
        return answer

    def _failed(self, error: StoreUnavailable) -> None:
        with self._lock:
            if self._next_probe is None:
                log.warning("the store cannot be reached, limits fail %s until it answers: %s", self.mode, error)
            self._next_probe = self._clock() + self.probe_after_s
            self.decided += 1
            self.last_error = str(error)

    def count_lost(self) -> None:
        """Count one write the store never saw."""
        with self._lock:
            self.lost += 1

    def write(self, what: str, operation: Callable[[], None]) -> None:
        """Make a write the caller cannot answer differently (a correction, a completed response);
        while the store is away it is counted as lost, and raised under "closed"."""

        def written() -> bool:
            operation()
            return True

        if self.call(written) is None:
            self.count_lost()
            if self.mode == "closed":
                raise StoreUnavailable(f"{what}: the store cannot be reached ({self.last_error})")


class PolicyBuckets:
    """RateBuckets whose answers, while the store is away, come from the fail policy."""

    def __init__(self, store: RateBuckets, policy: FailPolicy) -> None:
        self.store = store
        self.policy = policy

    def _decided(self) -> BucketAnswer:
        p = self.policy
        if p.mode == "open":
            return BucketAnswer(True, 0, 0.0, 0.0, p.decided_by)
        return BucketAnswer(False, 0, p.probe_after_s, p.probe_after_s, p.decided_by)

    def take(self, key: str, rate_per_s: float, burst: int, cost: float = 1, now: float | None = None) -> BucketAnswer:
        answer = self.policy.call(lambda: self.store.take(key, rate_per_s, burst, cost, now))
        return self._decided() if answer is None else answer

    def correct(self, key: str, rate_per_s: float, burst: int, delta: float, now: float | None = None) -> BucketAnswer:
        answer = self.policy.call(lambda: self.store.correct(key, rate_per_s, burst, delta, now))
        if answer is None:
            self.policy.count_lost()
            return self._decided()
        return answer


class PolicyBudgets:
    """BudgetCounters whose answers, while the store is away, come from the fail policy."""

    def __init__(self, store: BudgetCounters, policy: FailPolicy) -> None:
        self.store = store
        self.policy = policy

    def add(
        self, key: str, amount: float, limit: float | None, window_s: float, now: float | None = None
    ) -> BudgetAnswer:
        answer = self.policy.call(lambda: self.store.add(key, amount, limit, window_s, now))
        if answer is not None:
            return answer
        if limit is None or amount <= 0:  # a settlement or refund the store never saw
            self.policy.count_lost()
        return BudgetAnswer(self.policy.mode == "open", None, 0.0, self.policy.decided_by)

    def total(self, key: str, window_s: float, now: float | None = None) -> float:
        """The store's total; StoreUnavailable while it is away (a total is never made up)."""
        return self.store.total(key, window_s, now)


class PolicyKeys:
    """IdempotencyKeys under the fail policy: "open" lets a request in unchecked, "closed" raises."""

    def __init__(self, store: IdempotencyKeys, policy: FailPolicy) -> None:
        self.store = store
        self.policy = policy

    def claim(self, scope: str, key: str, request_sha: str, ttl_s: float, now: float | None = None) -> Claim:
        answer = self.policy.call(lambda: self.store.claim(scope, key, request_sha, ttl_s, now))
        if answer is not None:
            return answer
        if self.policy.mode == "open":
            return Claim("new", None, "fail-open")
        raise StoreUnavailable(
            f"idempotency key {key!r} of {scope!r} cannot be checked: the store cannot be reached"
            f" and the fail policy is closed ({self.policy.last_error})"
        )

    def complete(self, scope: str, key: str, response: bytes, now: float | None = None) -> None:
        self.policy.write(
            f"completing idempotency key {key!r} of {scope!r}", lambda: self.store.complete(scope, key, response, now)
        )

    def release(self, scope: str, key: str, now: float | None = None) -> None:
        self.policy.write(
            f"releasing idempotency key {key!r} of {scope!r}", lambda: self.store.release(scope, key, now)
        )
