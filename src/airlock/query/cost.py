"""Cost for the query: USD per call from the prices in airlock.yaml (airlock.ledger.prices), the price in
effect on the day each call was served. Cost is linear in tokens, so it is computed on token sums per
(upstream, model sent, day) rather than per row; the ledger's own per-span cost can replace this table
later without the query changing shape (it joins one table named `prices` on those three keys)."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb

from airlock.config.schema import Config
from airlock.ledger.prices import call_cost, find_model, price_in_effect

PRICE_KEYS = ("airlock.upstream", "airlock.upstream.model", "day")
NS_PER_DAY = 86_400 * 10**9


def price_rates(config: Config, upstream: str, model: str, day: int) -> tuple[float, float, float, float, float] | None:
    """USD per input, output, cached-input and reasoning token, and per call, for one model on one day."""
    price = price_in_effect(find_model(config, upstream, model), datetime.fromtimestamp(day * 86_400, UTC).date())
    if price is None:
        return None
    # per-token rates read off call_cost itself, so the two never disagree
    base = call_cost(price, 0, 0) or 0.0
    per_input = (call_cost(price, 1_000_000, 0) or 0.0) - base
    per_output = (call_cost(price, 0, 1_000_000) or 0.0) - base
    cached = (call_cost(price, 1_000_000, 0, cached_tokens=1_000_000) or 0.0) - base
    reasoning = (call_cost(price, 0, 1_000_000, reasoning_tokens=1_000_000) or 0.0) - base
    return per_input / 1e6, per_output / 1e6, cached / 1e6, reasoning / 1e6, base


def register_prices(con: duckdb.DuckDBPyConnection, config: Config | None, keys: list[tuple[str, str, int]]) -> bool:
    """A `prices` table with per-token and per-call USD for each key seen; False without a config."""
    con.execute(
        "CREATE TEMP TABLE prices (upstream VARCHAR, upstream_model VARCHAR, day BIGINT, input DOUBLE,"
        " output DOUBLE, cached DOUBLE, reasoning DOUBLE, per_call DOUBLE)"
    )
    if config is None:
        return False
    rows = []
    for upstream, model, day in keys:
        rates = price_rates(config, upstream, model, day)
        if rates is not None:
            rows.append((upstream, model, day, *rates))
    if rows:
        con.executemany("INSERT INTO prices VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return True
