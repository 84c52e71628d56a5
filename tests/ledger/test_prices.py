from datetime import date

from airlock.config.schema import ModelSpec, Price
from airlock.ledger import call_cost, price_in_effect


def test_price_in_effect_follows_effective_dates() -> None:
    spec = ModelSpec(
        name="m",
        prices=[
            Price(input_per_mtok=1.0, output_per_mtok=2.0, effective_from=date(2026, 1, 1)),
            Price(input_per_mtok=3.0, output_per_mtok=6.0, effective_from=date(2026, 6, 1)),
        ],
    )
    assert price_in_effect(spec, date(2026, 3, 1)).input_per_mtok == 1.0
    assert price_in_effect(spec, date(2026, 6, 1)).input_per_mtok == 3.0
    assert price_in_effect(spec, date(2025, 12, 31)) is None
    assert price_in_effect(ModelSpec(name="free"), date(2026, 3, 1)) is None


def test_call_cost_prices_cached_and_reasoning_tokens_apart() -> None:
    price = Price(
        input_per_mtok=2.0, output_per_mtok=8.0, cached_read_per_mtok=0.5, reasoning_per_mtok=8.0, per_request=0.001
    )
    usd = call_cost(price, 1_000_000, 100_000, cached_tokens=400_000, reasoning_tokens=50_000)
    assert usd == (600_000 * 2.0 + 400_000 * 0.5 + 50_000 * 8.0 + 50_000 * 8.0) / 1e6 + 0.001
    no_cache_price = Price(input_per_mtok=2.0, output_per_mtok=8.0)
    assert call_cost(no_cache_price, 1000, 10, cached_tokens=900) == (1000 * 2.0 + 10 * 8.0) / 1e6
    assert call_cost(None, 10, 10) is None and call_cost(price, None, 10) is None
