"""`airlock query`: filter spans by time and by any column or attribute, group by any of them, and
measure each group: spans, errors, error rate, latency percentiles, tokens and cost. The spec is
validated and priced here; a SpanQuery store runs it."""

from __future__ import annotations

from airlock.config.schema import Config
from airlock.query.cost import price_lookup
from airlock.query.spec import MEASURES, QueryResult, QuerySpec
from airlock.store.query import SpanQuery


def run_query(store: SpanQuery, spec: QuerySpec, config: Config | None = None) -> QueryResult:
    """The spec's top groups with their measures; cost from the config's prices (none without one)."""
    spec.validate()
    answer = store.grouped(spec, price_lookup(config))
    if not answer.recorded:
        return QueryResult(["spans"], [], 0, 0, 0, ["no spans recorded yet"])
    notes = [] if config is not None else ["cost needs the prices in the config: give --config"]
    return QueryResult(
        [*spec.by, *MEASURES], answer.rows, answer.groups_total, answer.spans_total, answer.copies_built, notes
    )
