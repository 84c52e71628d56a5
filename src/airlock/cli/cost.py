"""`airlock cost`: the bill from the record, and one task's line items."""

from __future__ import annotations

import csv
import math
import sys
from typing import Any

import click
import orjson

from airlock.cli.config_for import config_for
from airlock.cli.records import data_options
from airlock.cli.render import RecordTable, fmt_bytes, fmt_time, parse_when
from airlock.cli.render import console as make_console

CATEGORY_LABELS = {"telemetry_storage": "telemetry", "human_review": "review", "vector_db": "vector db"}


def fmt_usd(v: float | None) -> str:
    if v is None:
        return "-"
    if v == 0:
        return "$0"
    if abs(v) >= 100:
        return f"${v:,.2f}"
    if abs(v) >= 0.0001:
        return f"${v:.4f}"
    # sub-cent amounts per call: three significant digits in plain decimals, never scientific notation
    return f"${v:.{max(2, 2 - math.floor(math.log10(abs(v))))}f}"


def fmt_pct(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.1%}" if abs(v) < 0.1 else f"{v:.0%}"


@click.group()
def cost() -> None:
    """The cost of goods: every task's bill in line items, from the record."""


def _dims(by: str) -> list[str]:
    from airlock.ledger import DIMENSIONS

    dims = [d.strip() for d in by.split(",") if d.strip()]
    bad = [d for d in dims if d not in DIMENSIONS]
    if bad:
        raise click.BadParameter(f"{bad}: choose from {', '.join(DIMENSIONS)}", param_hint="--by")
    return dims


@cost.command("report")
@data_options
@click.option(
    "--by",
    default="tenant,feature",
    show_default=True,
    help="Comma list: tenant, feature, user, task, model, upstream, category, day.",
)
@click.option("--since", default=None, help="15m, 6h, 2d, or an ISO time.")
@click.option("--until", default=None)
@click.option("--forecast-tasks", type=int, default=None, help="Project the bill to this many tasks at today's mix.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--limit", type=int, default=40, show_default=True, help="Rows shown in the table.")
@click.option(
    "--regions",
    default=None,
    help="Comma list of store.regions, or all: each region's bill computed by its own stores, merged by region.",
)
def report_cmd(
    data_dir: str | None,
    config_path: str | None,
    by: str,
    since: str | None,
    until: str | None,
    forecast_tasks: int | None,
    fmt: str,
    limit: int,
    regions: str | None,
) -> None:
    """Line items by category, inference share, cost per task and per successful task, wasted spend,
    gross margin (with ledger.revenue_per_task) and a forecast."""
    from airlock.errors import StoreError
    from airlock.ledger import cost_report
    from airlock.ledger.report import regional_cost_report

    config = config_for(data_dir, config_path)
    window = (parse_when(since) if since else None, parse_when(until) if until else None)
    try:
        if regions:
            known = list(config.store.regions)
            chosen = known if regions == "all" else [r.strip() for r in regions.split(",") if r.strip()]
            unknown = [r for r in chosen if r not in known]
            if unknown or not chosen:
                raise click.BadParameter(
                    f"not under store.regions: {unknown or regions}; known: {known}", param_hint="--regions"
                )
            report = regional_cost_report(config, chosen, _dims(by), *window, forecast_tasks)
        else:
            report = cost_report(config, _dims(by), *window, forecast_tasks)
    except StoreError as e:
        raise click.UsageError(f"the store cannot be read: {e.detail}") from None
    if fmt == "json":
        sys.stdout.write(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    if fmt == "csv":
        _csv(report)
        return
    _table(report, limit)


def _flat(row: Any, categories: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = dict(row.key)
    out["total_usd"] = row.total_usd
    for c in categories:
        out[f"{c}_usd"] = row.by_category.get(c, 0.0)
    out.update(
        inference_share=row.inference_share,
        tasks=row.tasks,
        successful_tasks=row.successful_tasks,
        cost_per_task_usd=row.cost_per_task,
        cost_per_successful_task_usd=row.cost_per_successful_task,
        wasted_usd=row.wasted_total_usd,
        **{
            f"wasted_{k}_usd": row.wasted_usd.get(k, 0.0)
            for k in ("failed_attempt", "failed_request", "abandoned_stream")
        },
        estimated_usd=row.estimated_usd,
        revenue_usd=row.revenue_usd,
        gross_margin=row.gross_margin,
    )
    return out


def _csv(report: Any) -> None:
    rows = [_flat(r, report.categories) for r in report.rows]
    total = _flat(report.total, report.categories)
    total.update({d: "(total)" for d in report.by})
    rows.append(total)
    fields = list(rows[0]) if rows else ["total_usd"]
    writer = csv.DictWriter(sys.stdout, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)


def _table(report: Any, limit: int) -> None:
    console = make_console()
    total = report.total
    items = RecordTable(title="Line items by category")
    for col in ("category", "usd", "share", "of which estimated"):
        items.add_column(col, justify="left" if col == "category" else "right")
    for c in report.categories:
        usd = total.by_category[c]
        items.add_row(c, fmt_usd(usd), fmt_pct(usd / total.total_usd if total.total_usd else None), "")
    items.add_row("(total)", fmt_usd(total.total_usd), "100%", fmt_usd(total.estimated_usd), style="bold")
    console.print(items)
    t = RecordTable(title=f"The bill by {', '.join(report.by) or 'total'}")
    for d in report.by:
        t.add_column(d)
    for col in (
        "total",
        "inference",
        "infer. share",
        "largest other",
        "tasks",
        "ok",
        "$/task",
        "$/ok task",
        "wasted",
        "margin",
    ):
        t.add_column(col, justify="left" if col == "largest other" else "right")

    def add(row: Any, label: list[str], style: str | None = None) -> None:
        others = {c: v for c, v in row.by_category.items() if c != "inference" and v > 0}
        largest = max(others, key=lambda c: others[c]) if others else None
        t.add_row(
            *label,
            fmt_usd(row.total_usd),
            fmt_usd(row.inference_usd),
            fmt_pct(row.inference_share),
            f"{CATEGORY_LABELS.get(largest, largest)} {fmt_usd(others[largest])}" if largest else "-",
            str(row.tasks),
            str(row.successful_tasks),
            fmt_usd(row.cost_per_task),
            fmt_usd(row.cost_per_successful_task),
            fmt_usd(row.wasted_total_usd),
            fmt_pct(row.gross_margin),
            style=style,
        )

    for row in report.rows[:limit]:
        add(row, [row.key[d] for d in report.by])
    if len(report.rows) > limit:
        t.add_row(f"... {len(report.rows) - limit} more rows (--limit, or --format csv)")
    add(total, ["(total)"] + [""] * (len(report.by) - 1) if report.by else [], style="bold")
    console.print(t)
    waste = ", ".join(f"{k.replace('_', ' ')} {fmt_usd(v)}" for k, v in sorted(total.wasted_usd.items())) or "none"
    console.print(
        f"inference is {fmt_pct(total.inference_share)} of {fmt_usd(total.total_usd)}; wasted: {waste}; "
        f"telemetry store holds {fmt_bytes(report.held_bytes)}"
    )
    for u in report.unpriced:
        console.print(
            f"[yellow]no price in effect for {u['model']} on {u['upstream']}: {u['calls']} calls unpriced "
            f"({u['input_tokens']} in / {u['output_tokens']} out tokens)"
        )
    if report.forecast:
        f = report.forecast
        top = sorted(f.by_category.items(), key=lambda kv: -kv[1])[:4]
        parts = ", ".join(f"{CATEGORY_LABELS.get(c, c)} {fmt_usd(v)}" for c, v in top)
        margin = f"; revenue {fmt_usd(f.revenue_usd)}, margin {fmt_pct(f.gross_margin)}" if f.revenue_usd else ""
        console.print(f"forecast at {f.tasks:,} tasks: {fmt_usd(f.total_usd)} ({parts}, ...){margin}")


def _task_owner(task: str, tenants: dict[str | None, bool]) -> str | None:
    """The tenant whose task this is: the one whose spans it holds (items another tenant posted under its
    name are that tenant's own, never this task's); a name several tenants use needs --tenant."""
    recorded = [t for t, has_spans in tenants.items() if has_spans]
    if len(recorded) == 1:
        return recorded[0]
    if not recorded and len(tenants) <= 1:
        return next(iter(tenants), None)
    names = ", ".join(t or "(none)" for t in (recorded or tenants))
    raise click.UsageError(f"task {task!r} has lines of tenants {names}: choose one with --tenant")


@cost.command("task")
@data_options
@click.argument("task")
@click.option("--tenant", default=None, help="Whose lines, when tenants share the task's name.")
@click.option("--json", "as_json", is_flag=True)
def task_cmd(data_dir: str | None, config_path: str | None, task: str, tenant: str | None, as_json: bool) -> None:
    """Every line item of one task (its airlock.task, or its trace id), of the tenant that owns it."""
    from airlock.ledger import build_bill

    config = config_for(data_dir, config_path)
    bill = build_bill(config)
    try:
        owner = tenant if tenant is not None else _task_owner(task, bill.task_tenants(task))
        lines = bill.task_lines(task, owner)
    finally:
        bill.close()
    if as_json:
        sys.stdout.write(orjson.dumps(lines, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    if not lines:
        raise click.UsageError(f"no line items for task {task!r}")
    console = make_console()
    t = RecordTable(title=f"Task {task}: every line item")
    for col in ("time", "category", "what", "tokens in/out", "usd", "note"):
        t.add_column(col, justify="right" if col in ("usd", "tokens in/out") else "left")
    by_cat: dict[str, float] = {}
    for line in lines:
        usd = line["usd"]
        by_cat[line["category"]] = by_cat.get(line["category"], 0.0) + (usd or 0.0)
        what = {
            "span": f"{line['model'] or '?'} on {line['upstream']}",
            "hop": f"failed attempt on {line['upstream']}",
            "item": f"posted item ({line['upstream'] or 'no vendor'})",
            "attribute": "span attribute",
            "storage": f"payloads of span {(line['span_id'] or '')[:8]}",
            "energy": f"electricity of {line['model'] or '?'} on {line['upstream']}",
        }[line["source"]]
        tokens = f"{line['in_tok']}/{line['out_tok']}" if line["in_tok"] is not None else ""
        note = "; ".join(
            x for x in (line["wasted"] and f"wasted: {line['wasted']}", line["estimated"] and "estimated") if x
        )
        t.add_row(
            fmt_time(line["start_ns"]),
            line["category"],
            what,
            tokens,
            fmt_usd(usd) if usd is not None else "unpriced",
            note,
        )
    console.print(t)
    total = sum(by_cat.values())
    console.print(
        f"total {fmt_usd(total)}: "
        + ", ".join(
            f"{c} {fmt_usd(v)} ({v / total:.0%})" if total else c
            for c, v in sorted(by_cat.items(), key=lambda kv: -kv[1])
        )
    )
