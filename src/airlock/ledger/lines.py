"""Every line item of the bill, computed from the record at report time:

- inference: each model call priced from its usage with the price in effect when it was served (the
  span's start time picks the price, so old spans keep the price they were served at); local counts
  stand in for usage a provider did not report, and the line is marked estimated;
- failed attempts: upstream attempts that failed over and that the provider is assumed to bill
  (ledger.failed_attempts_billed), priced at their input tokens, estimated;
- attributes `airlock.cost.<category>` (USD) on any span, e.g. from an app's own instrumentation;
- posted line items (POST /v1/ledger/items), each on its own tenant's bill only;
- telemetry storage: the bytes the data directory holds, times its price for the retention period,
  spread over the spans by the payload bytes each brought.

Each line's `usd` is what that one call or item cost. With tail sampling, `scale` says how many times
it counts in a total (its trace's adjusted count from the sampler's decisions: 1/p when kept, 0 when
dropped and kept only for replay) and `task_weight` how many tasks its task stands for, so totals and
task counts stay unbiased once the sampler has pruned the record; storage is what the data directory
really holds and posted items are exact, so both have scale 1.

Each line carries the task (airlock.task, else the trace), tenant, feature, user, model and upstream,
and `wasted` says why it bought nothing: failed_attempt, failed_request or abandoned_stream.

A call's model is the one its route chose (the alias's target on that upstream, or the model it named
directly), so a model served under another model's upstream name is priced from its own entry."""

from __future__ import annotations

from typing import get_args

import pyarrow as pa

from airlock.config.schema import Config
from airlock.ledger.items import PostedCategory
from airlock.ledger.prices import price_rows
from airlock.store import Stores, build_stores
from airlock.store.ledger import Bill, BillQuery, ElectricityPricing, LedgerItemRecord, PricingTables


def pricing_tables(config: Config) -> PricingTables:
    """The config's prices and model names as tables for joining against the record."""
    prices = price_rows(config)
    price_table = pa.table(
        {
            "upstream": pa.array([p.upstream for p in prices], pa.string()),
            "model": pa.array([p.model for p in prices], pa.string()),
            "from_ns": pa.array([p.from_ns for p in prices], pa.int64()),
            "to_ns": pa.array([p.to_ns for p in prices], pa.int64()),
            "p_in": pa.array([p.price.input_per_mtok for p in prices], pa.float64()),
            "p_out": pa.array([p.price.output_per_mtok for p in prices], pa.float64()),
            "p_cached": pa.array([p.price.cached_read_per_mtok for p in prices], pa.float64()),
            "p_cwrite": pa.array([p.price.cache_write_per_mtok for p in prices], pa.float64()),
            "p_reason": pa.array([p.price.reasoning_per_mtok for p in prices], pa.float64()),
            "p_fee": pa.array([p.price.per_request for p in prices], pa.float64()),
        }
    )
    keys: dict[tuple[str, str], str] = {}
    for up in config.upstreams:  # a name sent upstream that is a model's own name is that model's first
        for m in up.models:
            keys.setdefault((up.name, m.name), m.name)
    for up in config.upstreams:
        for m in up.models:
            keys.setdefault((up.name, m.upstream_model or m.name), m.name)
    model_keys = pa.table(
        {
            "upstream": pa.array([k[0] for k in keys], pa.string()),
            "key": pa.array([k[1] for k in keys], pa.string()),
            "model": pa.array(list(keys.values()), pa.string()),
        }
    )
    targets = {(r.alias, t.upstream): t.model for r in config.routes for t in r.targets}
    route_targets = pa.table(
        {
            "route": pa.array([k[0] for k in targets], pa.string()),
            "upstream": pa.array([k[1] for k in targets], pa.string()),
            "model": pa.array(list(targets.values()), pa.string()),
        }
    )
    names = [(up.name, m.name) for up in config.upstreams for m in up.models]
    model_names = pa.table(
        {"upstream": pa.array([n[0] for n in names], pa.string()), "name": pa.array([n[1] for n in names], pa.string())}
    )
    deployments = pa.table(
        {
            "upstream": pa.array([u.name for u in config.upstreams], pa.string()),
            "deployment": pa.array([u.deployment for u in config.upstreams], pa.string()),
        }
    )
    return PricingTables(price_table, model_keys, route_targets, model_names, deployments)


def posted_items(stores: Stores, since_ns: int, until_ns: int) -> list[LedgerItemRecord]:
    """The posted items of a period, from the control-plane state."""
    store = stores.open_ledger_items()
    try:
        return store.in_window(since_ns, until_ns)
    finally:
        store.close()


def bill_query(
    config: Config, since_ns: int | None = None, until_ns: int | None = None, stores: Stores | None = None
) -> BillQuery:
    """What the bill of a period is computed from: the config's prices and rules and the posted items."""
    stores = stores or build_stores(config)
    since, until = since_ns or 0, until_ns or 2**62
    electricity = None
    if config.ledger.electricity is not None:
        from airlock.energy.report import span_energy  # the energy capability builds on the ledger's tables

        table, _ = span_energy(config, since_ns, until_ns, stores)
        electricity = ElectricityPricing(
            table, config.ledger.electricity.usd_per_kwh, tuple(config.ledger.electricity.deployments)
        )
    storage = config.ledger.telemetry_storage
    return BillQuery(
        since_ns=since,
        until_ns=until,
        pricing=pricing_tables(config),
        items=posted_items(stores, since, until),
        billed_outcomes=tuple(config.ledger.failed_attempts_billed),
        posted_categories=tuple(get_args(PostedCategory)),
        storage_usd_per_gib_month=storage.usd_per_gib_month,
        storage_retention_days=storage.retention_days,
        electricity=electricity,
    )


def build_bill(
    config: Config, since_ns: int | None = None, until_ns: int | None = None, stores: Stores | None = None
) -> Bill:
    """The bill of a period, read from `stores` (by default the config's). The caller closes it."""
    stores = stores or build_stores(config)
    return stores.bills.open_bill(bill_query(config, since_ns, until_ns, stores))
