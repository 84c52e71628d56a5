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
        forecast = _forecast(total, forecast_tasks)
        return CostReport(by, rows, total, categories, unpriced, bill.held_bytes, forecast)
    finally:
        bill.close()


def _forecast(total: CostRow, forecast_tasks: int | None) -> Forecast | None:
    if not (forecast_tasks and total.tasks):
        return None
    scale = forecast_tasks / total.tasks
    revenue = total.revenue_usd * scale if total.revenue_usd is not None else None
    return Forecast(
        forecast_tasks,
        total.total_usd * scale,
        {c: v * scale for c, v in total.by_category.items()},
        revenue,
        (revenue - total.total_usd * scale) / revenue if revenue else None,
    )


def regional_cost_report(
    config: Config,
    regions: list[str],
    by: list[str],
    since_ns: int | None = None,
    until_ns: int | None = None,
    forecast_tasks: int | None = None,
) -> CostReport:
    """The bill across regions, grouped by region first: each region's report is computed by that
    region's own stores (the grouping runs where the record is), and only its totals come back, so no
    span or payload leaves its region. A task that spans regions counts once in each."""
    from airlock.store import build_stores

    reports = {
        region: cost_report(config, by, since_ns, until_ns, None, build_stores(config, region)) for region in regions
    }
    rows = [_with_key({"region": region, **row.key}, row) for region, report in reports.items() for row in report.rows]
    total = CostRow({})
    for report in reports.values():
        _add(total, report.total)
    categories = sorted(total.by_category, key=lambda c: -total.by_category[c])
    unpriced = [{"region": region, **u} for region, report in reports.items() for u in report.unpriced]
    held = sum(report.held_bytes for report in reports.values())
    return CostReport(["region", *by], rows, total, categories, unpriced, held, _forecast(total, forecast_tasks))


def _with_key(key: dict[str, str], row: CostRow) -> CostRow:
    out = CostRow(key)
    _add(out, row)
    return out


def _add(into: CostRow, row: CostRow) -> None:
    into.total_usd += row.total_usd
    into.estimated_usd += row.estimated_usd
    into.tasks += row.tasks
    into.successful_tasks += row.successful_tasks
    for category, usd in row.by_category.items():
        into.by_category[category] = into.by_category.get(category, 0.0) + usd
    for reason, usd in row.wasted_usd.items():
        into.wasted_usd[reason] = into.wasted_usd.get(reason, 0.0) + usd
    if row.revenue_usd is not None:
        into.revenue_usd = (into.revenue_usd or 0.0) + row.revenue_usd
