from datetime import date
from pathlib import Path

from ledger_record import config

from airlock.config.schema import ModelSpec, Price
from airlock.ledger import call_cost, find_model, price_in_effect


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


def test_find_model_takes_an_aliased_model_for_itself_only(tmp_path: Path) -> None:
    """Regression: with m-mini (upstream_model m-large) listed before m-large, a call sent upstream as
    m-large was taken for m-mini whatever it was; and given its route, a call to m-mini was m-mini."""
    cfg = config(tmp_path)
    upstreams = [u.model_dump() for u in cfg.upstreams]
    mini = {"name": "m-mini", "upstream_model": "m-large", "prices": [{"input_per_mtok": 0.1, "output_per_mtok": 0.2}]}
    upstreams[0]["models"].insert(0, mini)
    routes = [
        *[r.model_dump() for r in cfg.routes],
        {"alias": "mini", "targets": [{"upstream": "up-a", "model": "m-mini"}]},
    ]
    cfg = config(tmp_path, upstreams=upstreams, routes=routes)
    assert find_model(cfg, "up-a", "m-large").name == "m-large"  # type: ignore[union-attr]
    assert find_model(cfg, "up-a", "m-large", route="m-mini").name == "m-mini"  # type: ignore[union-attr]
    assert find_model(cfg, "up-a", "m-large", route="mini").name == "m-mini"  # type: ignore[union-attr]
    assert find_model(cfg, "up-a", "m-large", route="chat").name == "m-large"  # type: ignore[union-attr]
    assert find_model(cfg, "up-b", "m-large-v2").name == "m-large"  # type: ignore[union-attr]
    assert find_model(cfg, "up-c", "m-large") is None
