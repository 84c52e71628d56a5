"""`airlock replay`: which recorded traffic can be replayed against another model."""

from __future__ import annotations

import sys

import click
import orjson
from rich.table import Table

from airlock.cli.records import _data_dir, _reader, data_options, trace_filter, trace_filter_options
from airlock.cli.render import console as make_console
from airlock.replay.fidelity import check_traces, replayable_fraction
from airlock.store.embedded import BlobReader


@click.group()
def replay() -> None:
    """Replay recorded traffic against another model."""


@replay.command("check")
@data_options
@trace_filter_options
@click.option("--json", "as_json", is_flag=True, help="The full result, with the replayable fraction.")
def check_cmd(data_dir: str | None, config_path: str | None, as_json: bool, **filters: object) -> None:
    """Which selected traces are fully replayable, and for each that is not, exactly what is missing."""
    data = _data_dir(data_dir, config_path)
    results = check_traces(_reader(data), BlobReader(data), trace_filter(**filters))
    fraction = replayable_fraction(results)
    if as_json:
        click.echo(
            orjson.dumps(
                {
                    "traces": len(results),
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
    t = Table(
        title=f"replay fidelity: {sum(r.replayable for r in results)} of {len(results)} traces replayable "
        f"({fraction:.1%})"
    )
    for col in ("trace", "calls", "replayable", "missing", "caveats"):
        t.add_column(col)
    for r in results:
        ok = "[green]yes[/green]" if r.replayable else "[red]no[/red]"
        t.add_row(r.trace_id[:16], str(len(r.spans)), ok, "\n".join(r.missing), "\n".join(r.caveats))
    make_console().print(t)
    click.echo(f"replayable fraction: {fraction:.3f}")
