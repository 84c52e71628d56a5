"""Non-inference line items: what a task cost beyond its model calls (vector database queries, tool and
API calls, human review, embeddings bought elsewhere, ...). Posted by the services that incur them,
validated here, and stored through a LedgerItemRepository, idempotent by (tenant, item id). An item
belongs to its tenant's task: naming a trace or task that only another tenant's spans carry is refused."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from airlock.errors import Forbidden
from airlock.store.ledger import LedgerItemRecord, LedgerItemRepository, RecordOwnerReader

# Categories a service may post. The ledger adds its own: inference (model calls, from the record) and
# telemetry_storage (Airlock's own bytes).
PostedCategory = Literal[
    "embeddings", "vector_db", "tool", "api", "human_review", "storage", "compute", "network", "other"
]
COMPUTED_CATEGORIES = ("inference", "telemetry_storage")


class LineItemIn(BaseModel):
    """One line item as posted: an amount, or a quantity at a unit price."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")
    category: PostedCategory
    amount_usd: float | None = Field(None, ge=0, le=1e9)
    quantity: float | None = Field(None, ge=0, le=1e12)
    unit_price_usd: float | None = Field(None, ge=0, le=1e9)
    unit: str | None = Field(None, max_length=32)  # query, call, minute, GiB-month, ...
    occurred_at: datetime | None = None  # default: when it arrived
    trace_id: str | None = Field(None, pattern=r"^[0-9a-f]{32}$")
    task: str | None = Field(None, max_length=256)
    feature: str | None = Field(None, max_length=256)
    user: str | None = Field(None, max_length=256)
    vendor: str | None = Field(None, max_length=128)
    description: str | None = Field(None, max_length=500)
    attributes: dict[str, str] = Field(default_factory=dict, max_length=32)

    @field_validator("unit", "task", "feature", "user", "vendor", "description")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        # A NUL byte is no part of any name or note, and PostgreSQL's text cannot hold one.
        if value is not None and "\x00" in value:
            raise ValueError("must not contain a NUL character")
        return value

    @field_validator("attributes")
    @classmethod
    def _no_nul_attributes(cls, value: dict[str, str]) -> dict[str, str]:
        if any("\x00" in k or "\x00" in v for k, v in value.items()):
            raise ValueError("must not contain a NUL character")
        return value

    @field_validator("occurred_at")
    @classmethod
    def _when(cls, value: datetime | None) -> datetime | None:
        # The record holds nanoseconds since 1970 in a signed 64-bit integer (to 2262); a bill is read up
        # to 2116. A time outside that is refused here rather than stored and never billed.
        if value is not None:
            utc = value if value.tzinfo else value.replace(tzinfo=UTC)
            if not datetime(1970, 1, 1, tzinfo=UTC) <= utc < datetime(2116, 1, 1, tzinfo=UTC):
                raise ValueError("occurred_at must fall between 1970 and 2115")
        return value

    @model_validator(mode="after")
    def _amount(self) -> LineItemIn:
        priced = self.quantity is not None and self.unit_price_usd is not None
        if self.amount_usd is None and not priced:
            raise ValueError("give amount_usd, or quantity and unit_price_usd")
        if self.amount_usd is not None and priced:
            expected = self.quantity * self.unit_price_usd  # type: ignore[operator]
            if not math.isclose(self.amount_usd, expected, rel_tol=1e-9, abs_tol=1e-12):
                raise ValueError(f"amount_usd {self.amount_usd} is not quantity x unit_price_usd ({expected})")
        if self.trace_id is None and self.task is None:
            raise ValueError("give trace_id or task, so the item belongs to a task")
        return self

    @property
    def usd(self) -> float:
        return self.amount_usd if self.amount_usd is not None else self.quantity * self.unit_price_usd  # type: ignore[operator]

    def digest(self) -> str:
        """What identifies this body for idempotency: the fields as sent (a default time is not sent)."""
        sent = self.model_dump(mode="json", exclude_unset=True)
        return hashlib.sha256(orjson.dumps(sent, option=orjson.OPT_SORT_KEYS)).hexdigest()


class ItemsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    items: list[LineItemIn] = Field(min_length=1, max_length=1000)


@dataclass(frozen=True)
class Accepted:
    id: str
    created: bool  # False: the same item was already accepted (a retried POST)


def _ns(when: datetime) -> int:
    """Nanoseconds since the epoch; a time without a zone is read as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


def item_record(tenant: str, item: LineItemIn, now_ns: int) -> LedgerItemRecord:
    """The item as stored for a tenant; it occurred when it arrived unless it says otherwise."""
    return LedgerItemRecord(
        tenant=tenant,
        item_id=item.id,
        category=item.category,
        amount_usd=item.usd,
        occurred_ns=_ns(item.occurred_at) if item.occurred_at else now_ns,
        request_sha=item.digest(),
        quantity=item.quantity,
        unit=item.unit,
        trace_id=item.trace_id,
        task=item.task,
        feature=item.feature,
        user_id=item.user,
        vendor=item.vendor,
        description=item.description,
        attributes=dict(item.attributes),
    )


def refuse_foreign_items(owners: RecordOwnerReader, tenant: str, items: Sequence[LineItemIn]) -> None:
    """Raise errors.Forbidden when an item names a trace or a task whose recorded spans all belong to
    other tenants: a tenant's items never join another tenant's task (nor say which tenant that is)."""
    traces = {i.trace_id for i in items if i.trace_id is not None}
    tasks = {i.task for i in items if i.task is not None}
    known = owners.owners(traces, tasks)
    for item in items:
        for what, key, by_key in (("trace", item.trace_id, known.traces), ("task", item.task, known.tasks)):
            holders = by_key.get(key) if key is not None else None
            if holders and tenant not in holders:
                raise Forbidden(
                    f"item {item.id!r} names {what} {key!r}, which belongs to another tenant; nothing was stored",
                    item_id=item.id,
                )


class LedgerItems:
    """Posting line items for a tenant through a repository. close() closes it."""

    def __init__(self, store: LedgerItemRepository, owners: RecordOwnerReader | None = None) -> None:
        self.repository = store
        self.owners = owners

    def add(self, tenant: str, items: Sequence[LineItemIn], now_ns: int | None = None) -> list[Accepted]:
        """Store items all or nothing. An item id seen before with the same body is accepted again
        (not stored twice); with another body, nothing is stored and errors.ItemConflict names it. With
        an owner reader, an item naming another tenant's trace or task is refused (errors.Forbidden)."""
        if self.owners is not None:
            refuse_foreign_items(self.owners, tenant, items)
        now_ns = time.time_ns() if now_ns is None else now_ns
        created = self.repository.insert_all([item_record(tenant, item, now_ns) for item in items])
        return [Accepted(item.id, new) for item, new in zip(items, created, strict=True)]

    def close(self) -> None:
        self.repository.close()
