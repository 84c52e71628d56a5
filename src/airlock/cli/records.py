"""Reading the record: `airlock status`, `airlock traces list|show`, `airlock blob`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson
from rich.text import Text
from rich.tree import Tree

from airlock.cli.config_for import stores_for
from airlock.cli.render import RecordTable, fmt_bytes, fmt_ms, fmt_time, parse_when, safe, styled
from airlock.cli.render import console as make_console
from airlock.errors import BlobCorrupt
from airlock.gateway.metrics import worker_statuses
from airlock.record.enrich import sse_events
from airlock.record.losses import read_losses
from airlock.store.embedded import DataDir
from airlock.store.interface import TraceFilter


def _data_dir(data_dir: str | None, config_path: str | None) -> DataDir:
    if data_dir:
        return DataDir.at(data_dir)
    from airlock.config import load_config
    from airlock.errors import ConfigError

    path = config_path or ("airlock.yaml" if Path("airlock.yaml").exists() else None)
    if path is None:
        raise click.UsageError("give --data-dir DIR or --config FILE (no airlock.yaml here)")
    try:
        return DataDir.at(load_config(path).data_dir)
    except ConfigError as e:
        raise click.UsageError(f"config refused: {e.detail}") from None


def data_options(fn: Any) -> Any:
    fn = click.option("--config", "-c", "config_path", default=None, help="Read data_dir from this config.")(fn)
    fn = click.option("--data-dir", "-d", default=None, help="The data directory to read.")(fn)
    return fn


def _writer_scheduling(status: dict[str, Any]) -> str:
    """How the worker's writer process is scheduled: idle, catching up, or nice only (and why)."""
    text = str(status.get("writer_scheduling") or "")
    if status.get("writer_catch_ups"):
        text += f", caught up {status['writer_catch_ups']}x"
    if status.get("writer_idle_refused"):
        text += f" (not idle: {status['writer_idle_refused']})"
    return text


@click.command()
@data_options
@click.option("--all", "show_all", is_flag=True, help="Include workers that have stopped.")
def status(data_dir: str | None, config_path: str | None, show_all: bool) -> None:
    """Recorder health per worker: queue depth, spills, drops, errors. Workers that have stopped are
    shown too (without --all) when they lost records; the loss files' total follows the table."""
    data = _data_dir(data_dir, config_path)
    losses = read_losses(data.run)
    rows = [
        s
        for s in worker_statuses(data.run, live_only=False, losses=losses)
        if show_all or s["alive"] or s.get("dropped")
    ]
    console = make_console()
    if not rows:
        console.print(f"no {'' if show_all else 'live '}gateway workers recorded in {data.root}")
    else:
        t = RecordTable(title=f"recorder status ({data.root})")
        columns = ("worker", "alive", "queue", "accepted", "written", "in WAL", "spilled", "dropped", "writer", "error")
        for col in columns:
            t.add_column(col, justify="right" if col not in ("worker", "writer", "error") else "left")
        for s in rows:
            t.add_row(
                s["writer_id"],
                "yes" if s["alive"] else "no",
                f"{s['queue_depth']}/{s['queue_capacity']}",
                str(s["accepted"]),
                str(s["written"]),
                str(s["wal_records"]),
                str(s["spilled"]),
                str(s["dropped"]),
                _writer_scheduling(s),
                s.get("error") or "",
            )
        console.print(t)
    pending_wal = sum(1 for p in data.wal.glob("*.wal")) if data.wal.exists() else 0
    pending_spill = sum(1 for p in data.spill.glob("*")) if data.spill.exists() else 0
    console.print(f"write-ahead files: {pending_wal}   spill files: {pending_spill}")
    if losses.dropped:
        console.print(Text(f"records lost (not in the record), counted in {data.run}/*.lost: {losses.dropped}", "red"))
        for reason, n in sorted(losses.reasons.items(), key=lambda kv: -kv[1]):
            console.print(Text(f"  {n}  {reason}"))
    for unreadable in losses.unreadable:
        console.print(Text(f"loss file unreadable: {unreadable}", "red"))
    if losses.dropped or losses.unreadable or any(s.get("dropped") for s in rows):
        sys.exit(1)


@click.group()
def traces() -> None:
    """List and show recorded traces."""


def trace_filter_options(fn: Any) -> Any:
    """The selection options shared by every command that reads a set of traces."""
    for option in reversed(
        [
            click.option("--since", default=None, help="15m, 6h, 2d, or an ISO time."),
            click.option("--until", default=None),
            click.option("--tenant", default=None),
            click.option("--model", default=None, help="The model asked for."),
            click.option("--status", "status_", type=click.Choice(["ok", "error", "cancelled"]), default=None),
            click.option("--attr", "attrs", multiple=True, help="KEY=VALUE; any column or free attribute. Repeatable."),
            click.option("--limit", type=int, default=30, show_default=True),
        ]
    ):
        fn = option(fn)
    return fn


def trace_filter(
    since: str | None,
    until: str | None,
    tenant: str | None,
    model: str | None,
    status_: str | None,
    attrs: tuple[str, ...],
    limit: int,
) -> TraceFilter:
    attributes = {}
    for a in attrs:
        key, sep, value = a.partition("=")
        if not sep:
            raise click.BadParameter(f"{a!r}: use KEY=VALUE", param_hint="--attr")
        attributes[key] = value
    return TraceFilter(
        since_ns=parse_when(since) if since else None,
        until_ns=parse_when(until) if until else None,
        tenant=tenant,
        model=model,
        status=status_,
        attributes=attributes,
        limit=limit,
    )


@traces.command("list")
@data_options
@trace_filter_options
@click.option("--json", "as_json", is_flag=True)
def traces_list(data_dir: str | None, config_path: str | None, as_json: bool, **filters: Any) -> None:
    """Traces with at least one span matching every filter, newest first."""
    flt = trace_filter(**filters)
    rows = stores_for(data_dir, config_path).spans.traces(flt)
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    if not rows:
        click.echo("no traces match")
        return
    t = RecordTable(title=f"{len(rows)} traces")
    for col in (
        "trace",
        "start (UTC)",
        "tenant",
        "task",
        "models",
        "spans",
        "errors",
        "failovers",
        "tokens in/out",
        "duration",
    ):
        t.add_column(col)
    for r in rows:
        errs = styled(f"[red]{r['errors']}[/red]") if r["errors"] else "0"
        t.add_row(
            r["trace_id"][:16],
            fmt_time(r["start_ns"]),
            r["tenant"] or "-",
            r["task"] or "-",
            r["models"] or "-",
            str(r["spans"]),
            errs,
            str(r["failovers"]),
            f"{r['input_tokens']}/{r['output_tokens']}",
            fmt_ms((r["end_ns"] - r["start_ns"]) / 1e6),
        )
    make_console().print(t)


def _decode_payload(found: dict[str, bytes | BlobCorrupt], digest: str | None, limit: int) -> str:
    if not digest:
        return "(none)"
    data = found.get(digest)
    if data is None:
        return f"(blob {digest[:12]} missing)"
    if isinstance(data, BlobCorrupt):
        return f"(blob {digest[:12]} CORRUPT: {data})"
    try:
        text = orjson.dumps(orjson.loads(data), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        events = sse_events(data)
        if events:
            text = f"SSE stream, {len(events)} events, {len(data)} bytes:\n" + "\n".join(
                e.decode("utf-8", "replace") for e in events
            )
        else:
            text = data.decode("utf-8", "replace")
    return (
        text
        if len(text) <= limit
        else text[:limit] + f"\n… ({len(text) - limit} more characters; airlock blob {digest[:16]})"
    )


@traces.command("show")
@data_options
@click.argument("trace")
@click.option("--payloads/--no-payloads", default=True, show_default=True)
@click.option("--max-chars", type=int, default=1500, show_default=True, help="Per payload.")
@click.option("--tenant", default=None, help="Only this tenant's spans of the trace.")
@click.option("--json", "as_json", is_flag=True)
def traces_show(
    data_dir: str | None,
    config_path: str | None,
    trace: str,
    payloads: bool,
    max_chars: int,
    tenant: str | None,
    as_json: bool,
) -> None:
    """A trace's spans as a tree, each with its hops and payloads. TRACE: trace id, request id, or a prefix."""
    stores = stores_for(data_dir, config_path)
    reader = stores.spans
    trace_id = reader.find_trace(trace, tenant=tenant)
    if trace_id is None:
        raise click.UsageError(f"no single trace matches {trace!r}" + (f" for tenant {tenant!r}" if tenant else ""))
    spans = reader.spans_of_trace(trace_id, tenant=tenant)
    hops = reader.hops_of_trace(trace_id, tenant=tenant)
    if as_json:
        click.echo(
            orjson.dumps(
                {"trace_id": trace_id, "spans": spans, "hops": hops}, option=orjson.OPT_INDENT_2, default=str
            ).decode()
        )
        return
    wanted = [s[c] for s in spans for c in ("airlock.payload.upstream_request", "airlock.payload.response") if s.get(c)]
    found = stores.payloads.get_many(wanted) if payloads else {}
    by_span: dict[str, list[dict[str, Any]]] = {}
    for h in hops:
        by_span.setdefault(h["span_id"], []).append(h)
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for s in spans:
        parent = s["parent_span_id"] if s["parent_span_id"] in ids else None
        children.setdefault(parent, []).append(s)
    root = Tree(f"trace [bold]{trace_id}[/bold]  ({len(spans)} spans)")

    def add(node: Tree, span: dict[str, Any]) -> None:
        colour = {"ok": "green", "error": "red", "cancelled": "yellow"}.get(span["status"], "white")
        usage = f"tokens {span['gen_ai.usage.input_tokens']}/{span['gen_ai.usage.output_tokens']}"
        if span.get("gen_ai.usage.cache_read.input_tokens"):
            usage += f" (cached {span['gen_ai.usage.cache_read.input_tokens']})"
        label = (
            f"[{colour}]{safe(span['status'])}[/{colour}] {safe(span['kind'])} "
            f"[bold]{safe(span['gen_ai.request.model'] or '')}[/bold] → {safe(span['gen_ai.response.model'] or '-')}"
            f"  {fmt_ms(span['duration_ms'])}"
            f"  ttft {fmt_ms(span['ttft_ms'])}  {usage}  span {span['span_id']}"
        )
        branch = node.add(label)
        facts = [
            f"start {fmt_time(span['start_ns'])}  tenant {safe(span['airlock.tenant'])}  http {span['http_status']}"
            f"  stream {span['airlock.request.stream']}  finish {safe(span['gen_ai.response.finish_reasons'])}"
        ]
        if span["error_type"]:
            facts.append(f"[red]error {safe(span['error_type'])}: {safe(span['error_message'])}[/red]")
        attrs = dict(span.get("attributes") or {})
        if attrs:
            facts.append("attributes " + ", ".join(f"{safe(k)}={safe(v)}" for k, v in sorted(attrs.items())))
        for f in facts:
            branch.add(f)
        hop_branch = branch.add(f"hops ({len(by_span.get(span['span_id'], []))})")
        for h in by_span.get(span["span_id"], []):
            hop_branch.add(
                f"#{h['attempt']} {safe(h['upstream'])} {safe(h['address'])} region {safe(h['region'])} "
                f"({safe(h['jurisdiction'])}, {safe(h['deployment'])}) → {safe(h['outcome'])}"
                f"{' ' + str(h['http_status']) if h['http_status'] else ''}"
                f"{'  ' + safe(h['reason']) if h['reason'] else ''}  {fmt_ms((h['end_ns'] - h['start_ns']) / 1e6)}"
            )
        if payloads:
            for col, title in (
                ("airlock.payload.upstream_request", "sent upstream"),
                ("airlock.payload.response", "received"),
            ):
                digest = span.get(col)
                data = found.get(digest) if digest else None
                size = len(data) if isinstance(data, bytes) else None
                p = branch.add(f"{title}: sha256 {digest[:16] if digest else '-'}  {fmt_bytes(size)}")
                p.add(Text(_decode_payload(found, digest, max_chars)))
        for child in children.get(span["span_id"], []):
            add(branch, child)

    for s in children.get(None, []):
        add(root, s)
    make_console().print(root)


@click.command()
@data_options
@click.argument("digest")
@click.option("--out", "-o", type=click.Path(), default=None, help="Write the bytes to a file.")
def blob(data_dir: str | None, config_path: str | None, digest: str, out: str | None) -> None:
    """Print a payload's exact bytes, verified against its sha256 (a unique prefix of 8+ characters works)."""
    blobs = stores_for(data_dir, config_path).payloads
    try:
        data = blobs.get(blobs.resolve(digest))
    except KeyError as e:
        raise click.UsageError(str(e.args[0]) if e.args else "no such blob") from None
    except BlobCorrupt as e:
        click.echo(f"airlock: {e}", err=True)
        sys.exit(3)
    if out:
        Path(out).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
