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
    """One row per group: money pivoted by category and by waste, tasks, successful tasks, revenue."""
    categories = [r["category"] for r in bill.sql("SELECT DISTINCT category FROM lines ORDER BY 1")]
    keys = [f"{DIMENSIONS[d]} AS k_{d}" for d in by]
    group = [f"k_{d}" for d in by]
    select_keys = "".join(k + ", " for k in keys)
    usd = "l.usd * l.scale"  # a line counts as often as its trace stands for (tail sampling)
    per_category = "".join(f"sum({usd}) FILTER (WHERE l.category = ?) AS c{i}, " for i in range(len(categories)))
    per_waste = "".join(f"sum({usd}) FILTER (WHERE l.wasted = '{w}') AS w_{w}, " for w in WASTE)
    bill.con.register("revenue_by_feature", _revenue_table(config))
    default_revenue = config.ledger.revenue_per_task
    priced = default_revenue is not None or bool(config.ledger.revenue_per_task_by_feature)
    revenue = (
        "sum(CASE WHEN t.last_status = 'ok' THEN coalesce(r.revenue, ?) * lt.weight END)" if priced else "NULL::DOUBLE"
    )
    group_by = f"GROUP BY {', '.join(group)}" if group else ""
    join = f"FULL JOIN t USING ({', '.join(group)})" if group else "CROSS JOIN t"
    rows = bill.sql(
        f"""
        WITH m AS (
            SELECT {select_keys} {per_category} {per_waste}
                   sum({usd}) AS total, sum(CASE WHEN l.estimated THEN {usd} ELSE 0 END) AS est
            FROM lines l WHERE l.usd IS NOT NULL {group_by}
        ), lt AS (
            SELECT {select_keys} l.tenant, l.task, max(l.task_weight) AS weight
            FROM lines l WHERE l.usd IS NOT NULL AND l.task IS NOT NULL
            GROUP BY ALL
        ), t AS (
            SELECT {"".join(g + ", " for g in group)} sum(lt.weight) AS tasks,
                   sum(lt.weight) FILTER (WHERE t.last_status = 'ok') AS ok, {revenue} AS revenue
            FROM lt LEFT JOIN tasks t ON t.tenant IS NOT DISTINCT FROM lt.tenant AND t.task = lt.task
            LEFT JOIN revenue_by_feature r ON r.feature = t.feature
            {group_by}
        )
        SELECT * FROM m {join} ORDER BY total DESC NULLS LAST""",
        [*categories, *([default_revenue] if priced else [])],
    )
    out = []
    for r in rows:
        if r["total"] is None and not r["tasks"]:
            continue
        row = CostRow({d: str(r[f"k_{d}"]) for d in by})
        row.total_usd = float(r["total"] or 0.0)
        row.by_category = {c: float(r[f"c{i}"]) for i, c in enumerate(categories) if r[f"c{i}"] is not None}
        row.wasted_usd = {w: float(r[f"w_{w}"]) for w in WASTE if r[f"w_{w}"] is not None}
        row.estimated_usd = float(r["est"] or 0.0)
        row.tasks, row.successful_tasks = round(r["tasks"] or 0), round(r["ok"] or 0)  # estimates when sampled
        row.revenue_usd = float(r["revenue"]) if r["revenue"] is not None else None
        out.append(row)
    return out


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
