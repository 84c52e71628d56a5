"""What the ledger asks of storage: the posted line items (a control-plane repository), who owns a trace or
a task in the record, and the bill's lines computed from the record for a period, grouped as the report
asks. The pricing inputs (price windows, how a recorded call names its model) are built by the ledger
from the config and handed in as Arrow tables; a backend only joins, sums and groups."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import pyarrow as pa

# What the bill can be grouped by. `day` is the UTC day (YYYY-MM-DD) of the line's start; every other
# dimension is the line's value, '(none)' where it has none.
BILL_DIMENSIONS = ("tenant", "feature", "user", "task", "model", "upstream", "category", "day")
# Why a line bought nothing.
WASTE_REASONS = ("failed_attempt", "failed_request", "abandoned_stream")
# The columns of one bill line, as lines() and task_lines() return them.
LINE_COLUMNS = (
    "source",  # span | hop | attribute | storage | item | energy
    "category",
    "usd",  # None: a call with no price in effect
    "estimated",
    "wasted",  # one of WASTE_REASONS, or None
    "trace_id",
    "task",
    "tenant",
    "feature",
    "user",
    "model",
    "upstream",
    "start_ns",
    "span_id",
    "in_tok",
    "out_tok",
    "scale",  # how many times the line counts in a total (tail sampling)
    "task_weight",  # how many tasks the line's task stands for
)


@dataclass(frozen=True)
class LedgerItemRecord:
    """One posted line item as stored: idempotent by (tenant, item_id), request_sha telling a retried
    POST (same body) from a conflicting one."""

    tenant: str
    item_id: str
    category: str
    amount_usd: float
    occurred_ns: int
    request_sha: str
    quantity: float | None = None
    unit: str | None = None
    trace_id: str | None = None
    task: str | None = None
    feature: str | None = None
    user_id: str | None = None
    vendor: str | None = None
    description: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)


# How a LedgerItemRecord is kept in a table: these columns, in this order, attributes as JSON text.
ITEM_COLUMNS = (
    "tenant", "item_id", "category", "amount_usd", "quantity", "unit", "occurred_ns", "trace_id", "task",
    "feature", "user_id", "vendor", "description", "attributes", "request_sha",
)  # fmt: skip


def item_row(item: LedgerItemRecord) -> tuple[Any, ...]:
    """The item as a row of ITEM_COLUMNS."""
    attributes = orjson.dumps(dict(item.attributes)).decode() if item.attributes else None
    return (
        item.tenant, item.item_id, item.category, item.amount_usd, item.quantity, item.unit, item.occurred_ns,
        item.trace_id, item.task, item.feature, item.user_id, item.vendor, item.description, attributes,
        item.request_sha,
    )  # fmt: skip


def item_of_row(row: Sequence[Any]) -> LedgerItemRecord:
    """The item a row of ITEM_COLUMNS holds."""
    fields = dict(zip(ITEM_COLUMNS, row, strict=True))
    fields["attributes"] = orjson.loads(fields["attributes"]) if fields["attributes"] else {}
    return LedgerItemRecord(**fields)


class LedgerItemRepository(Protocol):
    """The posted line items. Two gateway workers may post the same items at once."""

    def insert_all(self, items: Sequence[LedgerItemRecord]) -> list[bool]:
        """Store every item or none. Each is inserted if absent by (tenant, item_id): the result says per
        item True when it was stored now, False when the same body (request_sha) was already stored.
        Raises errors.ItemConflict (and stores nothing) when an id is stored with another body, and an
        errors.StoreError when the backend fails."""
        ...

    def in_window(self, since_ns: int, until_ns: int) -> list[LedgerItemRecord]:
        """The items that occurred in [since_ns, until_ns), every tenant's."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RecordOwners:
    """Which tenants' spans carry each trace id and task asked about (None: spans with no tenant). An id
    the record has no span for is absent."""

    traces: dict[str, frozenset[str | None]]
    tasks: dict[str, frozenset[str | None]]


class RecordOwnerReader(Protocol):
    def owners(self, trace_ids: Collection[str], tasks: Collection[str]) -> RecordOwners:
        """The tenants of the recorded spans of these traces, and of these tasks (a span's task is its
        airlock.task, else its trace id). Replayed spans are left out."""
        ...


@dataclass(frozen=True)
class PricingTables:
    """The config as tables for joining against the record.

    prices: upstream, model, from_ns, to_ns (the window it is in effect), p_in, p_out, p_cached, p_cwrite,
      p_reason (USD per million tokens; None: priced as plain input/output), p_fee (USD per request).
    model_keys: upstream, key, model: the model (its config name) an upstream serves under the name
      `key` sent to it, when the route does not say.
    route_targets: route, upstream, model: the model a route alias sends to an upstream; this decides a
      call's model first.
    model_names: upstream, name: the models each upstream serves by their config names; a call whose
      route is one of them addressed that model directly, and that decides its model next.
    upstream_deployments: upstream, deployment."""

    prices: pa.Table
    model_keys: pa.Table
    route_targets: pa.Table
    model_names: pa.Table
    upstream_deployments: pa.Table


@dataclass(frozen=True)
class ElectricityPricing:
    """Electricity lines: span_joules holds (span_id, joules, source: measured | profile) for the period's
    calls; calls served by upstreams of these deployments are billed at usd_per_kwh."""

    span_joules: pa.Table
    usd_per_kwh: float
    deployments: tuple[str, ...]


@dataclass(frozen=True)
class BillQuery:
    """The bill of [since_ns, until_ns): the record's calls priced by `pricing`, failed attempts with
    these hop outcomes billed at their input, `airlock.cost.<category>` attributes (a category not in
    posted_categories is 'other'), the posted items, the data directory's bytes priced per GiB-month for
    the retention period, and electricity where asked."""

    since_ns: int
    until_ns: int
    pricing: PricingTables
    items: Sequence[LedgerItemRecord]
    billed_outcomes: tuple[str, ...]
    posted_categories: tuple[str, ...]
    storage_usd_per_gib_month: float
    storage_retention_days: float
    electricity: ElectricityPricing | None = None


@dataclass(frozen=True)
class RevenueRule:
    """Revenue per successful task: by its feature, else the default (None: no revenue configured)."""

    default: float | None
    by_feature: Mapping[str, float]

    @property
    def priced(self) -> bool:
        return self.default is not None or bool(self.by_feature)


@dataclass
class GroupTotals:
    """One group of the bill. Money is each line's usd times its scale; tasks and successful tasks are
    sums of task weights (estimates when sampled); revenue is None unless a RevenueRule prices it."""

    key: dict[str, str]
    total_usd: float | None
    estimated_usd: float | None
    by_category: dict[str, float]
    wasted_usd: dict[str, float]
    tasks: float | None
    successful_tasks: float | None
    revenue_usd: float | None


class Bill(Protocol):
    """The lines of one period, computed once, read as often as needed until closed.

    A line belongs to a tenant and to a task of that tenant: a posted item only takes the task, feature
    and weight of a trace or task of its own tenant, never another's."""

    held_bytes: int  # what the data directory holds, priced as telemetry storage

    def lines(self) -> list[dict[str, Any]]:
        """Every line, as dicts of LINE_COLUMNS."""
        ...

    def task_lines(self, task: str, tenant: str | None) -> list[dict[str, Any]]:
        """The lines of one task (its task, or its trace id) of one tenant, by start time then source."""
        ...

    def task_tenants(self, task: str) -> dict[str | None, bool]:
        """The tenants with lines in a task (its task, or its trace id), each with whether it has lines
        from the record there (spans, hops, storage), not only posted items."""
        ...

    def categories(self) -> list[str]:
        """The categories of the lines, sorted."""
        ...

    def grouped(self, by: Sequence[str], revenue: RevenueRule) -> list[GroupTotals]:
        """One row per group of BILL_DIMENSIONS `by` (one row for the whole bill when empty), the largest
        total first. Lines without a usd (unpriced calls) are left out of money and task counts; a task
        is successful when its last span was ok."""
        ...

    def unpriced(self) -> list[dict[str, Any]]:
        """Calls with no price in effect, by upstream and model: upstream, model, calls, input_tokens,
        output_tokens, the most calls first."""
        ...

    def close(self) -> None: ...


class BillReader(Protocol):
    def open_bill(self, query: BillQuery) -> Bill:
        """The bill of a period. Raises errors.StoreError when the record cannot be read."""
        ...
