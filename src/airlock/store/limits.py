"""What the limiter, the budgets and idempotency ask of shared state: rate buckets (`RateBuckets`),
budget counters over fixed windows (`BudgetCounters`) and idempotency keys (`IdempotencyKeys`).

Every gateway process, and every replica, must see one bucket, one counter and one key, so each
operation is one atomic step in the store: a transaction on the embedded state database
(`airlock.store.embedded.limits`), a Lua script on Redis (`airlock.store.redis`). Another backend
implements these three protocols and nothing above `airlock.store` changes.

Rate buckets follow GCRA (the generic cell rate algorithm). A bucket of rate r per second and burst b
is one number, its theoretical arrival time (TAT): the moment at which the bucket would be full again.
A take of cost c moves the TAT forward by c / r seconds and is allowed when the new TAT is no more than
b / r seconds ahead of now. GCRA was chosen over a token bucket because its whole state is that one
number, written in one step without a separate refill clock (a token bucket keeps a count and the time
of its last refill, two values that must move together), and because it answers every question a
limiter asks from that number alone: how many tokens remain, when a refused take would be allowed,
and when the bucket is full again. A cost above one (the tokens of a model call) is c emission
intervals at once, and a correction after the fact (tokens estimated before, counted after) moves the
TAT by the difference, forward (charge) or back (refund).

Times are seconds since the epoch as floats. Each operation takes `now`: None means the store's own
clock (Redis's TIME, so replicas with skewed clocks still agree; the local clock for the embedded
store, whose processes share one machine). Tests pass `now` to make the arithmetic exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

DecidedBy = Literal["store", "fail-open", "fail-closed"]
ClaimState = Literal["new", "in_progress", "completed", "mismatch"]


@dataclass(frozen=True)
class BucketAnswer:
    """What a rate bucket said.

    allowed: the take was admitted (and charged); a refused take charges nothing.
    remaining: whole tokens left in the bucket after this answer (0 when empty or in debt).
    retry_after_s: seconds until the same take would be admitted (0.0 when it was).
    reset_s: seconds until the bucket is full again (0.0 when it is full).
    decided_by: "store" when the store answered; "fail-open" or "fail-closed" when the store could not
      be reached and the configured fail policy decided (see `airlock.store.fail_policy`).
    """

    allowed: bool
    remaining: int
    retry_after_s: float
    reset_s: float
    decided_by: DecidedBy = "store"


@dataclass(frozen=True)
class BudgetAnswer:
    """What a budget counter said.

    allowed: the amount was added; a refused amount adds nothing.
    total: the window's total after this answer; None when the fail policy decided (the store could
      not say).
    reset_s: seconds until the current window ends and a new one starts from zero.
    decided_by: as for BucketAnswer.
    """

    allowed: bool
    total: float | None
    reset_s: float
    decided_by: DecidedBy = "store"


@dataclass(frozen=True)
class Claim:
    """What claiming an idempotency key found.

    state "new": this caller holds the key now and must `complete` or `release` it;
      "in_progress": another attempt with the same request holds it (HTTP 409);
      "completed": a first attempt with the same request finished; `response` is what it stored;
      "mismatch": the key was used with a different request (HTTP 422).
    response: the stored response for "completed", else None.
    decided_by: "fail-open" when the store could not be reached and the fail policy let the request in
      unchecked; otherwise "store".
    """

    state: ClaimState
    response: bytes | None = None
    decided_by: DecidedBy = "store"


def check_bucket(rate_per_s: float, burst: int, cost: float) -> None:
    """Refuse a bucket that cannot exist or a take it could never admit (ValueError, a caller's defect)."""
    if not (rate_per_s > 0 and math.isfinite(rate_per_s)):
        raise ValueError(f"a rate bucket needs a positive, finite rate, not {rate_per_s!r}")
    if burst < 1:
        raise ValueError(f"a rate bucket needs a burst of at least 1, not {burst!r}")
    if not (0 <= cost <= burst):
        raise ValueError(f"a take must cost between 0 and the burst ({burst}), not {cost!r}")


def check_window(window_s: float) -> None:
    """Refuse a budget window that is not a positive, finite number of seconds (ValueError)."""
    if not (window_s > 0 and math.isfinite(window_s)):
        raise ValueError(f"a budget window must be a positive number of seconds, not {window_s!r}")


def window_start(now: float, window_s: float) -> float:
    """The start of the fixed window holding `now`: windows are aligned to the epoch, so a window of
    86400 s is a UTC day, and every process computes the same window for the same moment."""
    return math.floor(now / window_s) * window_s


def micros(t_s: float) -> int:
    """Seconds as whole microseconds, rounded half up (the rounding every backend uses)."""
    return math.floor(t_s * 1e6 + 0.5)


def emission_us(rate_per_s: float) -> int:
    """The bucket's emission interval (the time one token takes to refill) in whole microseconds, at
    least one. The GCRA sums are done in whole microseconds, so they are exact: a burst of ten is ten
    takes, never nine and a rounding error. A rate whose interval is not a whole number of
    microseconds is served at the nearest one (3/s: 333,333 us)."""
    return max(math.floor(1e6 / rate_per_s + 0.5), 1)


class RateBuckets(Protocol):
    def take(self, key: str, rate_per_s: float, burst: int, cost: float = 1, now: float | None = None) -> BucketAnswer:
        """Admit `cost` tokens from the bucket `key` (refilled at `rate_per_s`, holding at most `burst`)
        if it holds them, atomically for every process sharing the store. An unknown key is a full
        bucket. cost 0 reads the bucket without changing it. Raises ValueError for a rate <= 0, a burst
        < 1 or a cost outside [0, burst]; StoreUnavailable when the store cannot be reached."""
        ...

    def correct(self, key: str, rate_per_s: float, burst: int, delta: float, now: float | None = None) -> BucketAnswer:
        """Correct an earlier take by `delta` tokens, unconditionally: positive charges more (the
        bucket may go into debt, and later takes wait it out), negative refunds (never beyond a full
        bucket). The answer describes the bucket afterwards: `allowed` is whether a take of one token
        would now be admitted and `retry_after_s` when it would."""
        ...


class BudgetCounters(Protocol):
    def add(
        self, key: str, amount: float, limit: float | None, window_s: float, now: float | None = None
    ) -> BudgetAnswer:
        """Add `amount` to the counter `key` in the fixed window of `window_s` seconds holding `now`
        (see `window_start`), atomically, if the window's total stays at or below `limit`; refused
        amounts add nothing. limit None adds unconditionally (settling a cost already incurred); a
        negative amount (a refund) is always added. Sums are exact for whole numbers: pass money in
        integer micro-units where exactness at the boundary matters."""
        ...

    def total(self, key: str, window_s: float, now: float | None = None) -> float:
        """The counter's total in the window holding `now` (0.0 when nothing was added in it)."""
        ...


class IdempotencyKeys(Protocol):
    def claim(self, scope: str, key: str, request_sha: str, ttl_s: float, now: float | None = None) -> Claim:
        """Claim `key` within `scope` for the request whose digest is `request_sha`. Of any number of
        racing claimers exactly one gets "new". The key lives `ttl_s` seconds from this claim, in
        progress or completed; after that it is forgotten and the next claim is "new" again."""
        ...

    def complete(self, scope: str, key: str, response: bytes, now: float | None = None) -> None:
        """Store the response of the attempt holding the key, so that repeats get "completed" with it
        until the key expires. Raises StoreConflict when the key is not in progress (never claimed,
        released, expired, or already completed)."""
        ...

    def release(self, scope: str, key: str, now: float | None = None) -> None:
        """Give up an in-progress claim (the first attempt failed), so that a retry gets "new". A key
        not in progress (completed, expired, unknown) is left as it is."""
        ...
