"""Inference prices from the config. A model's price list has effective dates: the price for a call is the
newest one in effect on the (UTC) day it was served, so a price change never rewrites older calls.

Token counts follow the OpenAI convention: input tokens include the cached-read and cache-write ones,
output tokens include the reasoning ones; each part is priced apart when its price is set, and at the
plain input or output price when not."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from airlock.config.schema import Config, ModelSpec, Price


def find_model(
    config: Config, upstream: str | None, upstream_model: str | None, route: str | None = None
) -> ModelSpec | None:
    """The model spec a recorded call was served by on an upstream: the one its route chose (an alias's
    target there, or the model the call named directly) when the route is given, else the one the
    upstream serves under the name sent to it, a model's own name before another's upstream_model (so a
    model aliased to another's name is never taken for it, nor that model for the alias)."""
    up = next((u for u in config.upstreams if u.name == upstream), None)
    if up is None:
        return None
    by_name = {m.name: m for m in up.models}
    if route is not None:
        for r in config.routes:  # an alias wins over a model of the same name, as the router has it
            if r.alias == route:
                target = next((t.model for t in r.targets if t.upstream == up.name), None)
                return by_name.get(target) if target is not None else None
        if route in by_name:
            return by_name[route]
    if upstream_model in by_name:
        return by_name[upstream_model]
    return next((m for m in up.models if m.upstream_model == upstream_model), None)


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
    cache_write_tokens: int | None = None,
) -> float | None:
    """USD for one call: uncached, cached-read and cache-write input, output (reasoning priced apart when
    the price says so), and the per-request fee. None without a price or without usage."""
    if price is None or input_tokens is None or output_tokens is None:
        return None
    cached = min(cached_tokens or 0, input_tokens) if price.cached_read_per_mtok is not None else 0
    written = min(cache_write_tokens or 0, input_tokens - cached) if price.cache_write_per_mtok is not None else 0
    reasoning = min(reasoning_tokens or 0, output_tokens) if price.reasoning_per_mtok is not None else 0
    usd = (input_tokens - cached - written) * price.input_per_mtok
    usd += (output_tokens - reasoning) * price.output_per_mtok
    usd += cached * (price.cached_read_per_mtok or 0.0) + written * (price.cache_write_per_mtok or 0.0)
    usd += reasoning * (price.reasoning_per_mtok or 0.0)
    return usd / 1e6 + price.per_request


@dataclass(frozen=True)
class PriceRow:
    """One price of one model on one upstream, with the span of time it is in effect: [from_ns, to_ns)."""

    upstream: str
    model: str
    from_ns: int
    to_ns: int
    price: Price


_NEVER = 2**62


def _midnight_ns(day: date | None) -> int:
    if day is None:
        return 0
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000_000


def price_rows(config: Config) -> list[PriceRow]:
    """Every configured price as a row with its effective window, for joining against spans by start time."""
    rows = []
    for up in config.upstreams:
        for m in up.models:
            dated = sorted(m.prices, key=lambda p: p.effective_from or date.min)
            for i, p in enumerate(dated):
                to_ns = _midnight_ns(dated[i + 1].effective_from) if i + 1 < len(dated) else _NEVER
                rows.append(PriceRow(up.name, m.name, _midnight_ns(p.effective_from), to_ns, p))
    return rows
