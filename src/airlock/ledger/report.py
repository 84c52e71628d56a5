"""`airlock cost report`: the bill grouped by any of tenant, feature, user, task, model, upstream,
category, day: line items by category, the inference share, cost per task and per successful task,
wasted spend, gross margin where revenue per task is configured, and a forecast at a projected volume."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from airlock.config.schema import Config
from airlock.ledger.lines import build_bill
from airlock.store import Stores
from airlock.store.ledger import BILL_DIMENSIONS, WASTE_REASONS, Bill, GroupTotals, RevenueRule

DIMENSIONS = BILL_DIMENSIONS
WASTE = WASTE_REASONS


@dataclass
class CostRow:
    key: dict[str, str]
    total_usd: float = 0.0
    by_category: dict[str, float] = field(default_factory=dict)
    wasted_usd: dict[str, float] = field(default_factory=dict)
    estimated_usd: float = 0.0
    tasks: int = 0
    successful_tasks: int = 0
    revenue_usd: float | None = None

    @property
    def inference_usd(self) -> float:
        return self.by_category.get("inference", 0.0)

    @property
    def inference_share(self) -> float | None:
        return self.inference_usd / self.total_usd if self.total_usd else None

    @property
    def cost_per_task(self) -> float | None:
        return self.total_usd / self.tasks if self.tasks else None

    @property
    def cost_per_successful_task(self) -> float | None:
        return self.total_usd / self.successful_tasks if self.successful_tasks else None

    @property
    def wasted_total_usd(self) -> float:
        return sum(self.wasted_usd.values())

    @property
    def gross_margin(self) -> float | None:
        if not self.revenue_usd:
            return None
        return (self.revenue_usd - self.total_usd) / self.revenue_usd

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in (
            "inference_usd",
            "inference_share",
            "cost_per_task",
            "cost_per_successful_task",
            "wasted_total_usd",
            "gross_margin",
        ):
            out[name] = getattr(self, name)
        return out


@dataclass
class Forecast:
    tasks: int
    total_usd: float
    by_category: dict[str, float]
    revenue_usd: float | None
    gross_margin: float | None


@dataclass
class CostReport:
    by: list[str]
    rows: list[CostRow]
    total: CostRow
    categories: list[str]
    unpriced: list[dict[str, Any]]
    held_bytes: int
    forecast: Forecast | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "rows": [r.as_dict() for r in self.rows],
            "total": self.total.as_dict(),
            "categories": self.categories,
            "unpriced": self.unpriced,
            "telemetry_bytes_held": self.held_bytes,
            "forecast": asdict(self.forecast) if self.forecast else None,
        }


def _row(group: GroupTotals) -> CostRow:
    row = CostRow(group.key)
    row.total_usd = float(group.total_usd or 0.0)
    row.by_category = dict(group.by_category)
    row.wasted_usd = dict(group.wasted_usd)
    row.estimated_usd = float(group.estimated_usd or 0.0)
    # task counts are estimates when sampled
    row.tasks, row.successful_tasks = round(group.tasks or 0), round(group.successful_tasks or 0)
    row.revenue_usd = float(group.revenue_usd) if group.revenue_usd is not None else None
    return row


def _rows(bill: Bill, config: Config, by: list[str]) -> list[CostRow]:
    """One row per group: money pivoted by category and by waste, tasks, successful tasks, revenue."""
    revenue = RevenueRule(config.ledger.revenue_per_task, dict(config.ledger.revenue_per_task_by_feature))
    return [_row(g) for g in bill.grouped(by, revenue) if not (g.total_usd is None and not g.tasks)]


def cost_report(
    config: Config,
    by: list[str],
    since_ns: int | None = None,
    until_ns: int | None = None,
    forecast_tasks: int | None = None,
    stores: Stores | None = None,
) -> CostReport:
    unknown = [d for d in by if d not in DIMENSIONS]
    if unknown:
        raise ValueError(f"cannot group by {unknown}; choose from {', '.join(DIMENSIONS)}")
    bill = build_bill(config, since_ns, until_ns, stores)
    try:
        rows = _rows(bill, config, by)
        total = (_rows(bill, config, []) or [CostRow({})])[0]
        categories = sorted(total.by_category, key=lambda c: -total.by_category[c])
        unpriced = bill.unpriced()
        forecast = None
        if forecast_tasks and total.tasks:
            scale = forecast_tasks / total.tasks
            revenue = None
            if total.revenue_usd is not None:
                revenue = total.revenue_usd * scale
            forecast = Forecast(
                forecast_tasks,
                total.total_usd * scale,
                {c: v * scale for c, v in total.by_category.items()},
                revenue,
                (revenue - total.total_usd * scale) / revenue if revenue else None,
            )
        return CostReport(by, rows, total, categories, unpriced, bill.held_bytes, forecast)
    finally:
        bill.close()
