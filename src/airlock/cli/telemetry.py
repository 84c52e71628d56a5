"""`airlock query` and `airlock slices`: ask any question of any attribute, and find the slice of
traffic that is failing. A thin layer over airlock.query and airlock.slices."""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from typing import Any

import click
import orjson

from airlock.cli.config_for import stores_for
from airlock.cli.records import data_options
from airlock.cli.render import RecordTable, fmt_ms, fmt_time, parse_when
from airlock.cli.render import console as make_console
from airlock.config.schema import Config


def _config(config_path: str | None) -> Config | None:
    """The config, for prices; None when only a data directory was given."""
    if not config_path:
        return None
    from airlock.config import load_config
    from airlock.errors import ConfigError

    try:
        return load_config(config_path)
    except ConfigError as e:
        raise click.UsageError(f"config refused: {e.detail}") from None


def _cell(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column.startswith("time:") and isinstance(value, int):
        return fmt_time(value)[:19]
    if column.endswith("_ms"):
        return fmt_ms(value)
    if column in ("error_rate", "rate", "rest_rate"):
        return f"{value:.2%}"
    if column == "cost_usd":
        return f"${value:,.4f}"
    if column == "lift":
        return f"{value:.1f}x" if value != float("inf") else "inf"
    if column == "excess":
        return f"{value:,.0f}"
    if column == "p_adjusted":
        return f"{value:.1e}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _emit(columns: list[str], rows: list[dict[str, Any]], fmt: str, title: str, notes: list[str]) -> None:
    if fmt == "json":
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2, default=str).decode())
        return
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        click.echo(out.getvalue(), nl=False)
        return
    table = RecordTable(title=title)
    for c in columns:
        text = c == "slice" or not rows or isinstance(rows[0].get(c), str)
        table.add_column(c, justify="left" if text else "right")
    for r in rows:
        table.add_row(*(_cell(c, r.get(c)) for c in columns))
    console = make_console()
    console.print(table)
    for note in notes:
        console.print(f"[dim]{note}[/dim]")


FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True
)


@click.command()
@data_options
@click.option("--since", default=None, help="15m, 6h, 2d, or an ISO time.")
@click.option("--until", default=None)
@click.option(
    "--where",
    "-w",
    "where",
    multiple=True,
    help="KEY=VALUE, KEY!=VALUE, KEY>N, KEY<N, KEY>=N, KEY<=N, KEY~REGEX (KEY=null: missing). Any column, "
    "alias (tenant, model, region, prompt_version, ...) or attribute. Repeatable; all must hold.",
)
@click.option(
    "--by",
    "by",
    default="",
    help="Group by these, comma-separated: columns, aliases, attributes, or time:1h (time:<N><s|m|h|d> buckets).",
)
@click.option(
    "--sort",
    default="spans",
    show_default=True,
    help="spans, errors, error_rate, p50_ms, p95_ms, p99_ms, input_tokens, output_tokens, cost_usd (descending),"
    " or one of the --by keys (ascending, e.g. a time bucket).",
)
@click.option("--limit", type=int, default=20, show_default=True, help="Groups shown.")
@FORMAT
def query(
    data_dir: str | None,
    config_path: str | None,
    since: str | None,
    until: str | None,
    where: tuple[str, ...],
    by: str,
    sort: str,
    limit: int,
    fmt: str,
) -> None:
    """Spans filtered and grouped by any column or attribute: count, errors, latency, tokens, cost."""
    from airlock.query import Filter, QueryError, QuerySpec, run_query

    stores = stores_for(data_dir, config_path)
    if stores.backend == "embedded" and not stores.data.spans.exists():
        raise click.UsageError(f"no record at {stores.data.root}")
    try:
        spec = QuerySpec(
            since_ns=parse_when(since) if since else None,
            until_ns=parse_when(until) if until else None,
            where=tuple(Filter.parse(w) for w in where),
            by=tuple(b.strip() for b in by.split(",") if b.strip()),
            sort=sort,
            limit=limit,
        )
        started = time.monotonic()
        result = run_query(stores.query, spec, _config(config_path))
    except QueryError as e:
        raise click.UsageError(str(e)) from None
    elapsed = time.monotonic() - started
    if result.spans_total == 0 and fmt == "table":
        make_console().print("no spans match")
        return
    notes = [
        f"{result.spans_total:,} spans in {result.groups_total:,} groups; top {len(result.rows)} by {spec.sort}"
        f" ({elapsed:.2f} s{f', {result.copies_built} segment copies built' if result.copies_built else ''})",
        *result.notes,
    ]
    _emit(result.columns, result.rows, fmt, "airlock query", notes)


@click.command()
@data_options
@click.option("--metric", type=click.Choice(["errors", "latency", "cost"]), default="errors", show_default=True)
@click.option("--since", default=None, help="15m, 6h, 2d, or an ISO time.")
@click.option("--until", default=None)
@click.option("--where", "-w", "where", multiple=True, help="Only spans matching KEY=VALUE etc., as in airlock query.")
@click.option("--max-order", type=click.IntRange(1, 3), default=3, show_default=True, help="Attributes combined.")
@click.option("--min-support", type=int, default=None, help="Spans a slice needs (default: max(20, 0.05%)).")
@click.option("--alpha", type=float, default=0.05, show_default=True, help="Family-wise error rate (Bonferroni).")
@click.option("--top", type=int, default=10, show_default=True)
@click.option(
    "--regions",
    default=None,
    help="Comma list of store.regions, or all: the finder runs in each region's own record; findings listed by region.",
)
@FORMAT
def slices(
    data_dir: str | None,
    config_path: str | None,
    metric: str,
    since: str | None,
    until: str | None,
    where: tuple[str, ...],
    max_order: int,
    min_support: int | None,
    alpha: float,
    top: int,
    regions: str | None,
    fmt: str,
) -> None:
    """Attribute-value combinations whose error, latency or cost rate stands out, by excess failures."""
    from airlock.query import Filter, QueryError
    from airlock.slices import SliceOptions, find_slices, report_rows

    stores = None if regions else stores_for(data_dir, config_path)
    if stores is not None and stores.backend == "embedded" and not stores.data.spans.exists():
        raise click.UsageError(f"no record at {stores.data.root}")
    try:
        filters = tuple(Filter.parse(w) for w in where)
    except QueryError as e:
        raise click.UsageError(str(e)) from None
    opts = SliceOptions(
        where=filters,
        metric=metric,
        since_ns=parse_when(since) if since else None,
        until_ns=parse_when(until) if until else None,
        max_order=max_order,
        min_support=min_support,
        alpha=alpha,
        top=top,
    )
    if regions:
        _regional_slices(config_path, regions, opts, fmt)
        return
    assert stores is not None
    started = time.monotonic()
    try:
        report = find_slices(stores.slices, opts, _config(config_path))
    except QueryError as e:
        raise click.UsageError(str(e)) from None
    elapsed = time.monotonic() - started
    rows = report_rows(report)
    if fmt != "table":
        _emit(list(rows[0]) if rows else ["rank", "slice"], rows, fmt, "", [])
        return
    if report.spans == 0:
        make_console().print("no spans in the window")
        return
    rate = report.failures / report.spans
    notes = [
        f"{report.spans:,} spans, {report.failures:,} failed ({report.outcome}; {rate:.2%});"
        f" {report.tried:,} slices counted, Bonferroni over {report.hypotheses:,} possible; {elapsed:.2f} s",
        *report.notes,
    ]
    if not rows:
        console = make_console()
        console.print(f"no slice stands out (metric {metric}, alpha {alpha})")
        for note in notes:
            console.print(f"[dim]{note}[/dim]")
        sys.exit(0)
    _emit(
        ["rank", "slice", "spans", "failures", "rate", "rest_rate", "lift", "excess", "p_adjusted"],
        rows,
        fmt,
        f"Slices that stand out: {metric}",
        notes,
    )


def _regional_slices(config_path: str | None, regions: str, opts: Any, fmt: str) -> None:
    """The slice finder in each region's own record (the counting runs where the spans are); only each
    region's findings come back, listed by region. A slice that stands out only across regions is not
    looked for."""
    from airlock.errors import StoreError
    from airlock.query import QueryError
    from airlock.slices import find_slices, report_rows
    from airlock.store import build_stores

    config = _config(config_path or "airlock.yaml")
    if config is None:
        raise click.UsageError("--regions needs the config (--config FILE)")
    known = list(config.store.regions)
    chosen = known if regions == "all" else [r.strip() for r in regions.split(",") if r.strip()]
    unknown = [r for r in chosen if r not in known]
    if unknown or not chosen:
        raise click.BadParameter(
            f"not under store.regions: {unknown or regions}; known: {known}", param_hint="--regions"
        )
    rows: list[dict[str, Any]] = []
    notes = []
    try:
        for region in chosen:
            report = find_slices(build_stores(config, region).slices, opts, config)
            rows += [{"region": region, **row} for row in report_rows(report)]
            notes.append(
                f"{region}: {report.spans:,} spans, {report.failures:,} failures, {report.tried:,} slices tried"
            )
    except StoreError as e:
        raise click.UsageError(f"the store cannot be read: {e.detail}") from None
    except QueryError as e:
        raise click.UsageError(str(e)) from None
    columns = list(rows[0]) if rows else ["region", "rank", "slice"]
    _emit(columns, rows, fmt, "Slices by region (each found in its own region's record)", notes)
