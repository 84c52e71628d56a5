"""Non-inference line items: what a task cost beyond its model calls (vector database queries, tool and
API calls, human review, embeddings bought elsewhere, ...). Posted by the services that incur them,
validated here, and kept in SQLite, idempotent by (tenant, item id)."""

from __future__ import annotations

import hashlib
import math
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from airlock.errors import ItemConflict
from airlock.store.embedded import SQLiteState

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


_COLUMNS = (
    "tenant", "item_id", "category", "amount_usd", "quantity", "unit", "occurred_ns", "trace_id", "task",
    "feature", "user_id", "vendor", "description", "attributes", "request_sha",
)  # fmt: skip


def _ns(when: datetime) -> int:
    """Nanoseconds since the epoch; a time without a zone is read as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


class LedgerItems:
    """The line item table in the data directory's SQLite state."""

    def __init__(self, state_db: Path) -> None:
        self.state = SQLiteState(state_db)
        self.conn: sqlite3.Connection = self.state.conn

    def add(self, tenant: str, items: list[LineItemIn], now_ns: int | None = None) -> list[Accepted]:
        """Store items all or nothing. An item id seen before with the same body is accepted again
        (not stored twice); with another body, nothing is stored and ItemConflict names it."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        out: list[Accepted] = []
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for item in items:
                sha = item.digest()
                occurred = _ns(item.occurred_at) if item.occurred_at else now_ns
                row = (
                    tenant, item.id, item.category, item.usd, item.quantity, item.unit, occurred, item.trace_id,
                    item.task, item.feature, item.user, item.vendor, item.description,
                    orjson.dumps(item.attributes).decode() if item.attributes else None, sha,
                )  # fmt: skip
                cur = self.conn.execute(
                    f"INSERT INTO ledger_items ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
                    " ON CONFLICT (tenant, item_id) DO NOTHING",
                    row,
                )
                if cur.rowcount == 1:
                    out.append(Accepted(item.id, True))
                    continue
                known = self.conn.execute(
                    "SELECT request_sha FROM ledger_items WHERE tenant = ? AND item_id = ?", (tenant, item.id)
                ).fetchone()
                if known is None or known[0] != sha:
                    raise ItemConflict(item.id)
                out.append(Accepted(item.id, False))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return out

    def rows(self, since_ns: int | None = None, until_ns: int | None = None) -> list[dict[str, Any]]:
        query = f"SELECT {', '.join(_COLUMNS[:-1])} FROM ledger_items WHERE occurred_ns >= ? AND occurred_ns < ?"
        cur = self.conn.execute(query, (since_ns or 0, until_ns or 2**62))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def close(self) -> None:
        self.state.close()
