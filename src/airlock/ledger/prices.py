"""Inference prices from the config. A model's price list has effective dates: the price for a call is the
newest one in effect on the day it was served, so a price change never rewrites older calls."""

from __future__ import annotations

from datetime import date

from airlock.config.schema import Config, ModelSpec, Price


def find_model(config: Config, upstream: str | None, upstream_model: str | None) -> ModelSpec | None:
    """The model spec an upstream serves under the name that was sent to it."""
    for up in config.upstreams:
        if up.name != upstream:
            continue
        for m in up.models:
            if (m.upstream_model or m.name) == upstream_model or m.name == upstream_model:
                return m
    return None


def price_in_effect(spec: ModelSpec | None, day: date) -> Price | None:
    if spec is None or not spec.prices:
        return None
    dated = sorted(spec.prices, key=lambda p: p.effective_from or date.min)
    in_effect = [p for p in dated if (p.effective_from or date.min) <= day]
    return in_effect[-1] if in_effect else None


def call_cost(
    price: Price | None,
    input_tokens: int | None,
    output_tokens: int | None,
    cached_tokens: int | None = None,
    reasoning_tokens: int | None = None,
) -> float | None:
    """USD for one call: uncached and cached input, output (reasoning priced apart when the price says
    so), and the per-request fee. None without a price or without usage."""
    if price is None or input_tokens is None or output_tokens is None:
        return None
    cached = min(cached_tokens or 0, input_tokens) if price.cached_read_per_mtok is not None else 0
    reasoning = min(reasoning_tokens or 0, output_tokens) if price.reasoning_per_mtok is not None else 0
    usd = (input_tokens - cached) * price.input_per_mtok + (output_tokens - reasoning) * price.output_per_mtok
    usd += cached * (price.cached_read_per_mtok or 0.0) + reasoning * (price.reasoning_per_mtok or 0.0)
    return usd / 1e6 + price.per_request
