"""What `airlock query` asks of the record: run a QuerySpec (filters, group keys, sort, limit) over
every span and answer with the measures of the top groups. A backend implements `SpanQuery`; the
analysis (airlock.query) validates the spec, looks prices up, and words the answer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from airlock.query.spec import QuerySpec


class PriceRates(NamedTuple):
    """USD per input, output, cached-input and reasoning token, and per call."""

    input: float
    output: float
    cached: float
    reasoning: float
    per_call: float


NS_PER_DAY = 86_400 * 10**9  # a span's day is start_ns // NS_PER_DAY: the UTC day number since the epoch
# The rates for (upstream, model sent upstream, day), or None if unpriced.
PriceLookup = Callable[[str, str, int], PriceRates | None]


@dataclass(frozen=True)
class GroupedSpans:
    """A SpanQuery's answer. `rows` holds the top `spec.limit` groups in the spec's sort order, each a
    dict of the spec's `by` names (the group's key values: strings or numbers as recorded, a time
    bucket's start in ns, None where spans lack the field) and then every name in
    airlock.query.spec.MEASURES. Counts and tokens are weighted by tail sampling's adjusted counts
    (a span stands for 1/p spans; a replay-reserve span for none); latency percentiles are of the spans
    kept; cost_usd is None without a price lookup or where nothing in the group was priced."""

    rows: list[dict[str, Any]]
    groups_total: int  # groups before the limit
    spans_total: int  # (weighted) spans over every group
    copies_built: int = 0  # work the backend did to prepare (the embedded store's query copies)
    recorded: bool = True  # False: no span has been recorded at all


class SpanQuery(Protocol):
    """Filter, group and measure every recorded span."""

    def grouped(self, spec: QuerySpec, prices: PriceLookup | None = None) -> GroupedSpans:
        """The spec run over every span (start_ns in [since_ns, until_ns), matching every filter).

        Filters and group keys name fields as airlock.query.fields resolves them: an alias, a span column
        or a free attribute; a time:<N><unit> key groups by time bucket. A field no span holds is null.
        `prices` prices each (upstream, upstream model, day) seen; without it cost_usd is None. Raises
        QueryError for a filter or key that cannot be evaluated, StoreError when the store fails."""
        ...
