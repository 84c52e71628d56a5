"""Dynamic per-key sampling rates under a span budget per hour.

Each key's traffic (traces and spans per hour) is a count that decays with time constant `window`. The
budget left after what the policies keep is shared between keys in proportion to log(1 + traces/hour),
water-filled: a key whose whole traffic fits its share is kept entirely and the rest is shared again.
So a rare key is kept often (often entirely) and a busy one rarely, and the kept spans fit the budget.

Selection within a key is systematic: each trace adds its probability p to the key's accumulator and is
kept when it crosses an integer. With the accumulator's start uniform in [0, 1) (from a hash of the seed
and the key), each trace is kept with probability exactly p even as p changes, so 1/p is its adjusted
count and sums over kept traces are unbiased; and the number kept of any n traces is within one of the
sum of their p, so while a key's rate holds steady its count estimate is off by at most one adjusted
count (independent coin flips would be off by about sqrt(n/p))."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

_HOUR_NS = 3600 * 10**9


@dataclass(slots=True)
class KeyTraffic:
    traces: float = 0.0  # decayed counts
    spans: float = 0.0
    accumulator: float = 0.0
    probability: float = 1.0


def start_offset(seed: int, key: str) -> float:
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class KeyRates:
    def __init__(self, budget_per_hour: int, window_ns: int, max_keys: int, seed: int) -> None:
        self.budget = float(budget_per_hour)
        self.window_ns = window_ns
        self.max_keys = max_keys
        self.seed = seed
        self.keys: dict[str, KeyTraffic] = {}
        self.policy_spans = 0.0  # decayed count of spans kept by a policy
        self.first_ns: int | None = None
        self.now_ns: int | None = None

    # -- traffic ---------------------------------------------------------------------------------

    def observe(self, key: str, spans: int, kept_by_policy: bool, start_ns: int, end_ns: int) -> None:
        """Count one decided trace at its end time: a newer one moves the clock on (decaying the rest),
        an older one counts with the weight it would have by now."""
        if self.now_ns is None or end_ns > self.now_ns:
            self.advance(end_ns)
        now = self.now_ns if self.now_ns is not None else end_ns
        weight = math.exp(-(now - end_ns) / self.window_ns) if now > end_ns else 1.0
        stat = self.keys.get(key)
        if stat is None:
            stat = self.keys[key] = KeyTraffic(accumulator=start_offset(self.seed, key))
        stat.traces += weight
        stat.spans += spans * weight
        if kept_by_policy:
            self.policy_spans += spans * weight
        if self.first_ns is None or start_ns < self.first_ns:
            self.first_ns = start_ns

    def advance(self, now_ns: int) -> None:
        """Decay every count to `now_ns` (trace time: the newest span end seen)."""
        if self.now_ns is None:
            self.now_ns = now_ns
            return
        if now_ns <= self.now_ns:
            return
        factor = math.exp(-(now_ns - self.now_ns) / self.window_ns)
        for stat in self.keys.values():
            stat.traces *= factor
            stat.spans *= factor
        self.policy_spans *= factor
        self.now_ns = now_ns

    def _per_hour(self, count: float) -> float:
        """A decayed count as a rate per hour: divided by the integral of the decay weights so far."""
        elapsed = max((self.now_ns or 0) - (self.first_ns or 0), 60 * 10**9)  # at least a minute
        effective = self.window_ns * (1 - math.exp(-elapsed / self.window_ns))
        return count * _HOUR_NS / effective

    # -- rates -----------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Recompute every key's probability from its traffic and the budget (water-filling)."""
        if len(self.keys) > self.max_keys:  # forget the quietest keys; they start again at p = 1
            keep = sorted(self.keys.items(), key=lambda kv: kv[1].traces, reverse=True)[: int(self.max_keys * 0.9)]
            self.keys = dict(keep)
        rest = max(self.budget - self._per_hour(self.policy_spans), 0.1 * self.budget)
        items = []
        for stat in self.keys.values():
            traces_h, spans_h = self._per_hour(stat.traces), self._per_hour(stat.spans)
            items.append((stat, spans_h, math.log1p(traces_h)))
        items.sort(key=lambda it: it[1] / it[2] if it[2] > 0 else 0.0)
        total_w = sum(w for _, _, w in items)
        for stat, spans_h, w in items:
            share = rest * w / total_w if total_w > 0 else rest
            if spans_h <= share:
                stat.probability = 1.0
                rest -= spans_h
                total_w -= w
            else:
                stat.probability = max(share / spans_h, 1e-9)

    def probability(self, key: str) -> float:
        stat = self.keys.get(key)
        return 1.0 if stat is None else stat.probability

    def take(self, key: str) -> tuple[bool, float]:
        """Systematic selection: (kept, p) for the key's next trace."""
        stat = self.keys.get(key)
        if stat is None:
            stat = self.keys[key] = KeyTraffic(accumulator=start_offset(self.seed, key))
        p = stat.probability
        stat.accumulator += p
        if stat.accumulator >= 1.0:
            stat.accumulator -= 1.0
            return True, p
        return False, p

    # -- persistence -----------------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        return {
            "keys": {k: [s.traces, s.spans, s.accumulator, s.probability] for k, s in self.keys.items()},
            "policy_spans": self.policy_spans,
            "first_ns": self.first_ns,
            "now_ns": self.now_ns,
        }

    def load(self, doc: dict[str, Any]) -> None:
        self.keys = {k: KeyTraffic(*v) for k, v in doc["keys"].items()}
        self.policy_spans = doc["policy_spans"]
        self.first_ns = doc["first_ns"]
        self.now_ns = doc["now_ns"]
