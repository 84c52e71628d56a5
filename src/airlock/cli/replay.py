"""`airlock replay`: which recorded traffic can be replayed against another model."""

from __future__ import annotations

import sys
from typing import Any

import click
import orjson
from click.core import ParameterSource

from airlock.cli.config_for import stores_for
from airlock.cli.records import data_options, trace_filter, trace_filter_options
from airlock.cli.render import RecordTable, styled
from airlock.cli.render import console as make_console
from airlock.errors import ReplayError, StoreError
from airlock.replay.fidelity import check_traces, replayable_fraction


@click.group()
def replay() -> None:
    """Replay recorded traffic against another model."""


def all_option(fn: Any) -> Any:
    return click.option(
        "--all",
        "take_all",
        is_flag=True,
        help="Every trace the selection matches. Without it the newest --limit are taken, or with --since or "
        "--until and no --limit, the whole window.",
    )(fn)


def selection_limit(filters: dict[str, Any], take_all: bool) -> int | None:
    """How many of the matching traces a replay command takes (None: all): --limit when given, all with
    --all or with a time window (--since/--until) and no --limit, else the default --limit."""
    limit_given = click.get_current_context().get_parameter_source("limit") not in (None, ParameterSource.DEFAULT)
    if take_all and limit_given:
        raise click.UsageError("give --limit N or --all, not both")
    if limit_given and int(filters["limit"]) < 1:
        raise click.BadParameter("give a positive number", param_hint="--limit")
    if take_all or (not limit_given and (filters.get("since") or filters.get("until"))):
        return None
    return int(filters["limit"])


@replay.command("check")
@data_options
@trace_filter_options
@all_option
@click.option("--json", "as_json", is_flag=True, help="The full result, with the replayable fraction.")
def check_cmd(data_dir: str | None, config_path: str | None, as_json: bool, take_all: bool, **filters: Any) -> None:
    """Which selected traces are fully replayable, and for each that is not, exactly what is missing."""
    stores = stores_for(data_dir, config_path)
    limit = selection_limit(filters, take_all)
    try:
        check = check_traces(stores.replay, trace_filter(**filters), limit)
    except StoreError as e:
        click.echo(f"airlock: {e.detail}", err=True)
        sys.exit(1)
    results, chosen = check.results, check.chosen
    fraction = replayable_fraction(results)
    if as_json:
        click.echo(
            orjson.dumps(
                {
                    "traces": len(results),
                    "matched": chosen.matched,
                    "cut": chosen.cut,
                    "replayable": sum(r.replayable for r in results),
                    "replayable_fraction": fraction,
                    "results": [
                        {
                            "trace_id": r.trace_id,
                            "replayable": r.replayable,
                            "calls": len(r.spans),
                            "missing": r.missing,
                            "caveats": r.caveats,
                        }
                        for r in results
                    ],
                }
            ).decode()
        )
        return
    if not results:
        click.echo("no traces match the selection")
        sys.exit(1)
    t = RecordTable(
        title=f"replay fidelity: {sum(r.replayable for r in results)} of {len(results)} traces replayable "
        f"({fraction:.1%})"
    )
    for col in ("trace", "calls", "replayable", "missing", "caveats"):
        t.add_column(col)
    for r in results:
        ok = styled("[green]yes[/green]" if r.replayable else "[red]no[/red]")
        t.add_row(r.trace_id[:16], str(len(r.spans)), ok, "\n".join(r.missing), "\n".join(r.caveats))
    make_console().print(t)
    click.echo(f"replayable fraction: {fraction:.3f}")
    if chosen.cut:
        click.echo(chosen.describe())


@replay.command("run")
@data_options
@trace_filter_options
@all_option
@click.option("--target", required=True, help="The candidate: a route alias or model name from the config.")
@click.option("--name", default=None, help="Name of the run (default: a timestamp). The same name resumes it.")
@click.option("--concurrency", type=int, default=4, show_default=True)
@click.option(
    "--on-divergence",
    type=click.Choice(["continue", "stop"]),
    default="continue",
    show_default=True,
    help="After the candidate diverges, go on with the recorded next turn, or stop that trace.",
)
def run_cmd(
    data_dir: str | None,
    config_path: str | None,
    target: str,
    name: str | None,
    concurrency: int,
    on_divergence: str,
    take_all: bool,
    **filters: Any,
) -> None:
    """Re-execute the selected traffic against the candidate. Tools are never called: recorded results are
    returned. The replay is recorded, tagged with its run name and linked to the originals."""
    import asyncio

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from airlock.config import load_config
    from airlock.errors import ConfigError
    from airlock.replay.runner import ReplayRunner, default_name

    if data_dir:
        raise click.UsageError("replay run needs --config (it routes the candidate through the config's upstreams)")
    try:
        config = load_config(config_path or "airlock.yaml")
    except ConfigError as e:
        raise click.UsageError(f"config refused: {e.detail}") from None
    limit = selection_limit(filters, take_all)
    runner = ReplayRunner(config, name or default_name(), target, on_divergence, concurrency)
    try:
        pending = runner.prepare(trace_filter(**filters), whole=limit is None)
    except (ReplayError, StoreError) as e:
        click.echo(f"airlock: {e.detail}", err=True)
        sys.exit(1)
    read_it = f"Read it with: airlock replay report -c {config_path or 'airlock.yaml'} {runner.name}"
    p = runner.progress
    if runner.finished and not pending:
        click.echo(
            f"replay {runner.name} was already finished: {p.done} traces replayed, {p.diverged} diverged, "
            f"{p.failed} failed, {p.skipped} skipped. {read_it}"
        )
        return
    if runner.chosen is not None and runner.chosen.cut:
        click.echo(f"replay {runner.name}: {runner.chosen.describe()}")
    already = p.done + p.skipped
    total = already + len(pending)
    with Progress(
        TextColumn("[bold]replay {task.fields[name]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]}  diverged {task.fields[diverged]}  skipped {task.fields[skipped]}"),
        console=make_console(),
    ) as bar:
        task = bar.add_task(
            "replay", total=total, completed=already, name=runner.name, failed=0, diverged=p.diverged, skipped=p.skipped
        )

        def update(p: object) -> None:
            bar.update(
                task,
                completed=runner.progress.done + runner.progress.failed + runner.progress.skipped,
                failed=runner.progress.failed,
                diverged=runner.progress.diverged,
                skipped=runner.progress.skipped,
            )

        try:
            asyncio.run(runner.run(pending, update))
        except (ReplayError, StoreError) as e:
            click.echo(f"airlock: {e.detail}", err=True)
            sys.exit(1)
    p = runner.progress
    click.echo(
        f"replay {runner.name}: {p.done} traces replayed, {p.diverged} diverged, {p.failed} failed, "
        f"{p.skipped} skipped. {read_it}"
    )
    if p.failed:
        sys.exit(1)


@replay.command("report")
@data_options
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.option("--html", "html_path", type=click.Path(), default=None, help="Also write a self-contained HTML file.")
def report_cmd(data_dir: str | None, config_path: str | None, name: str, as_json: bool, html_path: str | None) -> None:
    """How the candidate compared with the record: exact match, tool-call agreement, structured-output
    validity, divergence points, token and latency deltas, with 95% confidence intervals."""
    from pathlib import Path

    from airlock.replay.report import build_report, summary_rows, to_html

    try:
        report = build_report(stores_for(data_dir, config_path), name)
    except KeyError as e:
        raise click.UsageError(str(e.args[0])) from None
    except StoreError as e:
        click.echo(f"airlock: {e.detail}", err=True)
        sys.exit(1)
    if html_path:
        page = Path(html_path)
        try:
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(to_html(report), encoding="utf-8")
        except OSError as e:
            raise click.UsageError(f"cannot write {html_path}: {e.strerror or e}") from None
    if as_json:
        click.echo(orjson.dumps(report.to_json()).decode())
        return
    t = RecordTable(title=f"replay {report.name} against {report.target}")
    t.add_column("measure")
    t.add_column("value")
    for k, v in summary_rows(report):
        t.add_row(k, v)
    make_console().print(t)
    diverged = [tr for tr in report.traces if tr.get("diverged_at") is not None]
    if diverged:
        d = RecordTable(title="where the candidate diverged")
        for col in ("trace", "replay trace", "turns", "diverged at turn"):
            d.add_column(col)
        for tr in diverged[:20]:
            d.add_row(
                tr["trace_id"][:16],
                (tr.get("replay_trace_id") or "")[:16],
                str(tr.get("turns")),
                str(tr["diverged_at"]),
            )
        make_console().print(d)
    if html_path:
        click.echo(f"wrote {html_path}")
