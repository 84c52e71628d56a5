"""What `airlock query` is asked, in its users' terms: filters (KEY=VALUE, KEY>N, KEY~REGEX, ...), group
keys (fields or time buckets), a sort and a limit; and what it answers. Parsing and validation live
here; how a store runs a spec is the store's business (airlock.store.query)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from airlock.errors import QueryError

_FILTER = re.compile(r"^\s*([^=!<>~\s][^=!<>~]*?)\s*(!=|>=|<=|=|>|<|~)\s*(.*?)\s*$", re.S)
SORTS = ("spans", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms", "input_tokens", "output_tokens", "cost_usd")
MEASURES = ("spans", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms", "input_tokens", "output_tokens", "cost_usd")
ORDER_OPS = (">", "<", ">=", "<=")

_BUCKET = re.compile(r"^time:(\d+)([smhd])$")
_UNIT_NS = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}


@dataclass(frozen=True)
class Filter:
    name: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Filter:
        m = _FILTER.match(text)
        if not m:
            raise QueryError(f"{text!r}: write KEY=VALUE, KEY!=VALUE, KEY>N, KEY<N, KEY>=N, KEY<=N or KEY~REGEX")
        return cls(m.group(1), m.group(2), m.group(3))

    @property
    def tests_missing(self) -> bool:
        """KEY=null or KEY!=null: whether the span lacks (or has) the field at all."""
        return self.value.lower() == "null" and self.op in ("=", "!=")

    def pattern(self) -> str:
        """The regular expression of a KEY~REGEX filter, checked to compile."""
        try:
            re.compile(self.value)
        except re.error as e:
            raise QueryError(f"{self.name}~{self.value}: not a regular expression: {e}") from None
        return self.value

    def number(self) -> float:
        """The value of a numeric comparison."""
        try:
            return float(self.value)
        except ValueError:
            raise QueryError(f"{self.name}{self.op}{self.value}: {self.value!r} is not a number") from None


def bucket_width_ns(name: str) -> int | None:
    """For a group key time:<N><s|m|h|d>, the width of its buckets in ns; None for a field name."""
    m = _BUCKET.match(name)
    if m is None:
        if name.startswith("time:"):
            raise QueryError(f"{name!r}: a time bucket is time:<N><s|m|h|d>, e.g. time:1h")
        return None
    width = int(m.group(1)) * _UNIT_NS[m.group(2)]
    if width <= 0:
        raise QueryError(f"{name!r}: the bucket must be longer than zero")
    return width


@dataclass(frozen=True)
class QuerySpec:
    since_ns: int | None = None
    until_ns: int | None = None
    where: tuple[Filter, ...] = ()
    by: tuple[str, ...] = ()
    sort: str = "spans"
    limit: int = 20

    def validate(self) -> None:
        """Refuse a sort, limit or group key that cannot be run."""
        if self.sort not in SORTS and self.sort not in self.by:
            raise QueryError(f"sort by one of {', '.join(SORTS)}, or by a group key (ascending)")
        if self.limit <= 0:
            raise QueryError("limit must be positive")
        for name in self.by:
            bucket_width_ns(name)


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[dict[str, Any]]
    groups_total: int
    spans_total: int
    copies_built: int = 0
    notes: list[str] = field(default_factory=list)
