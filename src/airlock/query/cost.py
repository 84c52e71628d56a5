"""Cost for the query: USD per call from the prices in airlock.yaml (airlock.ledger.prices), the price in
effect on the day each call was served, as per-token and per-call rates per (upstream, model sent, day).
Cost is linear in tokens, so a store can price token sums per key rather than each row; the ledger's own
per-span cost can replace these rates later without the query changing shape."""

from __future__ import annotations

from datetime import UTC, datetime

from airlock.config.schema import Config
from airlock.ledger.prices import call_cost, find_model, price_in_effect
from airlock.store.query import PriceLookup, PriceRates


def price_rates(config: Config, upstream: str, model: str, day: int) -> PriceRates | None:
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
    return PriceRates(per_input / 1e6, per_output / 1e6, cached / 1e6, reasoning / 1e6, base)


def price_lookup(config: Config | None) -> PriceLookup | None:
    """The config's prices as a lookup for a store; None when there is no config or it prices nothing."""
    if config is None or not any(m.prices for u in config.upstreams for m in u.models):
        return None
    priced = config

    def rates(upstream: str, model: str, day: int) -> PriceRates | None:
        return price_rates(priced, upstream, model, day)

    return rates
