"""`airlock cost report`: the bill grouped by any of tenant, feature, user, task, model, upstream,
category, day: line items by category, the inference share, cost per task and per successful task,
wasted spend, gross margin where revenue per task is configured, and a forecast at a projected volume."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from airlock.config.schema import Config
from airlock.ledger.lines import Bill, build_bill

DIMENSIONS = {
    "tenant": "coalesce(l.tenant, '(none)')",
    "feature": "coalesce(l.feature, '(none)')",
    "user": "coalesce(l.\"user\", '(none)')",
    "task": "coalesce(l.task, '(none)')",
    "model": "coalesce(l.model, '(none)')",
    "upstream": "coalesce(l.upstream, '(none)')",
    "category": "l.category",
    "day": "strftime(make_timestamp(l.start_ns // 1000), '%Y-%m-%d')",
}
WASTE = ("failed_attempt", "failed_request", "abandoned_stream")


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


def _revenue_table(config: Config) -> pa.Table:
    by_feature = config.ledger.revenue_per_task_by_feature
    return pa.table(
        {
            "feature": pa.array(list(by_feature), pa.string()),
            "revenue": pa.array(list(by_feature.values()), pa.float64()),
        }
    )


def _rows(bill: Bill, config: Config, by: list[str]) -> list[CostRow]:
    keys = [f"{DIMENSIONS[d]} AS k_{d}" for d in by]
    group = [f"k_{d}" for d in by]
    key_select = ", ".join(keys) + ", " if keys else ""
    group_by = ", ".join(group) + ", " if group else ""
    money = bill.sql(f"""
        SELECT {key_select} l.category, l.wasted, sum(l.usd) AS usd,
               sum(CASE WHEN l.estimated THEN l.usd ELSE 0 END) AS est
        FROM lines l WHERE l.usd IS NOT NULL
        GROUP BY {group_by} l.category, l.wasted""")
    bill.con.register("revenue_by_feature", _revenue_table(config))
    default_revenue = config.ledger.revenue_per_task
    revenue_expr = (
        "sum(CASE WHEN t.last_status = 'ok' THEN coalesce(r.revenue, ?) END)"
        if default_revenue is not None or config.ledger.revenue_per_task_by_feature
        else "NULL"
    )
    params = [default_revenue] if revenue_expr != "NULL" else []
    task_keys = [f"{DIMENSIONS[d]} AS k_{d}" for d in by]
    tasks = bill.sql(
        f"""
        WITH lt AS (
            SELECT DISTINCT {", ".join(task_keys) + "," if task_keys else ""} l.tenant, l.task
            FROM lines l WHERE l.usd IS NOT NULL AND l.task IS NOT NULL
        )
        SELECT {", ".join(group) + "," if group else ""} count(*) AS tasks,
               count(*) FILTER (WHERE t.last_status = 'ok') AS ok,
               {revenue_expr} AS revenue
        FROM lt LEFT JOIN tasks t ON t.tenant IS NOT DISTINCT FROM lt.tenant AND t.task = lt.task
        LEFT JOIN revenue_by_feature r ON r.feature = t.feature
        {"GROUP BY " + ", ".join(group) if group else ""}""",
        params,
    )
    out: dict[tuple[str, ...], CostRow] = {}

    def row_for(r: dict[str, Any]) -> CostRow:
        k = tuple(str(r[g]) for g in group)
        if k not in out:
            out[k] = CostRow(dict(zip(by, k, strict=True)))
        return out[k]

    for r in money:
        row = row_for(r)
        usd = float(r["usd"] or 0.0)
        row.total_usd += usd
        row.by_category[r["category"]] = row.by_category.get(r["category"], 0.0) + usd
        row.estimated_usd += float(r["est"] or 0.0)
        if r["wasted"]:
            row.wasted_usd[r["wasted"]] = row.wasted_usd.get(r["wasted"], 0.0) + usd
    for r in tasks:
        row = row_for(r)
        row.tasks, row.successful_tasks = int(r["tasks"]), int(r["ok"])
        row.revenue_usd = float(r["revenue"]) if r["revenue"] is not None else None
    return sorted(out.values(), key=lambda c: -c.total_usd)


def cost_report(
    config: Config,
    by: list[str],
    since_ns: int | None = None,
    until_ns: int | None = None,
    forecast_tasks: int | None = None,
) -> CostReport:
    unknown = [d for d in by if d not in DIMENSIONS]
    if unknown:
        raise ValueError(f"cannot group by {unknown}; choose from {', '.join(DIMENSIONS)}")
    bill = build_bill(config, since_ns, until_ns)
    try:
        rows = _rows(bill, config, by)
        total = (_rows(bill, config, []) or [CostRow({})])[0]
        categories = sorted(total.by_category, key=lambda c: -total.by_category[c])
        unpriced = bill.sql("""
            SELECT upstream, model, count(*) AS calls, sum(in_tok) AS input_tokens, sum(out_tok) AS output_tokens
            FROM lines WHERE source = 'span' AND usd IS NULL GROUP BY 1, 2 ORDER BY calls DESC""")
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
