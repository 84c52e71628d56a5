"""The sketches the policies read, from Apache DataSketches: a rolling quantile (KLL) for "slow" and
"costly", and a frequent-items sketch for "rare". Both have a fixed memory bound whatever the traffic."""

from __future__ import annotations

import base64
from typing import Any

from datasketches import frequent_strings_sketch, kll_doubles_sketch

_KLL_K = 200  # normalized rank error ~1.3%, a few KB


class RollingQuantile:
    """A quantile over roughly the last `window_ns` of observations: two KLL sketches, the current window
    and the one before; a quantile reads both merged, so the estimate never starts from nothing."""

    def __init__(self, window_ns: int) -> None:
        self.window_ns = window_ns
        self.current = kll_doubles_sketch(_KLL_K)
        self.previous = kll_doubles_sketch(_KLL_K)
        self.started_ns: int | None = None

    def update(self, value: float, now_ns: int) -> None:
        if self.started_ns is None:
            self.started_ns = now_ns
        elif now_ns - self.started_ns >= self.window_ns:
            self.previous, self.current = self.current, kll_doubles_sketch(_KLL_K)
            self.started_ns = now_ns
        self.current.update(value)

    @property
    def n(self) -> int:
        return int(self.current.n + self.previous.n)

    def quantile(self, q: float, min_n: int = 100) -> float | None:
        """The q-quantile, or None before `min_n` observations (a p99 of ten values means nothing)."""
        if self.n < min_n:
            return None
        merged = kll_doubles_sketch(_KLL_K)
        merged.merge(self.previous)
        merged.merge(self.current)
        return float(merged.get_quantile(q))

    def dump(self) -> dict[str, Any]:
        return {
            "current": _b64(self.current.serialize()),
            "previous": _b64(self.previous.serialize()),
            "started_ns": self.started_ns,
        }

    def load(self, doc: dict[str, Any]) -> None:
        self.current = kll_doubles_sketch.deserialize(_unb64(doc["current"]))
        self.previous = kll_doubles_sketch.deserialize(_unb64(doc["previous"]))
        self.started_ns = doc["started_ns"]


class RareSignatures:
    """How often each attribute signature has been seen, approximately, in bounded memory: signatures
    the frequent-items sketch does not track have an upper bound of its maximum error."""

    def __init__(self, lg_max_map_size: int = 12) -> None:
        self.lg = lg_max_map_size
        self.sketch = frequent_strings_sketch(lg_max_map_size)

    def is_rare(self, signature: str, below: float, warmup: int) -> bool:
        total = int(self.sketch.total_weight)
        if total < warmup:
            return False
        return float(self.sketch.get_upper_bound(signature)) < below * total

    def update(self, signature: str) -> None:
        self.sketch.update(signature)

    def decay(self) -> None:
        """Halve the weight of the past (by rebuilding from the tracked items), so "rare" follows the
        traffic's recent mix, not all of history."""
        fresh = frequent_strings_sketch(self.lg)
        for item, estimate, *_ in self.sketch.get_frequent_items(_no_false_negatives()):
            if estimate >= 2:
                fresh.update(item, int(estimate) // 2)
        self.sketch = fresh

    @property
    def total(self) -> int:
        return int(self.sketch.total_weight)

    def dump(self) -> str:
        return _b64(self.sketch.serialize())

    def load(self, blob: str) -> None:
        self.sketch = frequent_strings_sketch.deserialize(_unb64(blob))


def _no_false_negatives() -> Any:
    from datasketches import frequent_items_error_type

    return frequent_items_error_type.NO_FALSE_NEGATIVES


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)
