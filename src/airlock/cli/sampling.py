"""`airlock sample run|status|gc`: tail sampling over the written record, and what it kept and why."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console

from airlock.cli.records import _data_dir, data_options
from airlock.cli.render import RecordTable, fmt_time, styled
from airlock.cli.render import console as make_console


def _config(config_path: str | None) -> Any:
    from airlock.config import load_config
    from airlock.errors import ConfigError

    path = config_path or ("airlock.yaml" if Path("airlock.yaml").exists() else None)
    if path is None:
        raise click.UsageError("give --config FILE (the sampling policies and prices are read from it)")
    try:
        return load_config(path)
    except ConfigError as e:
        raise click.UsageError(f"config refused: {e.detail}") from None


@click.group()
def sample() -> None:
    """Tail sampling: decide whole traces, keep errors, denials, slow, costly and rare ones."""


@sample.command("run")
@click.option("--config", "-c", "config_path", default=None, help="The config (policies, budget, prices).")
@click.option("--all", "flush", is_flag=True, help="Decide every waiting trace now (the traffic is over).")
def run_cmd(config_path: str | None, flush: bool) -> None:
    """Run sampler passes until every written span has been read, then say what was decided."""
    from airlock.sampling.service import take_sampler_lock
    from airlock.sampling.stage import SamplingPass
    from airlock.store.embedded import DataDir

    config = _config(config_path)
    data = DataDir.at(config.data_dir)
    if not data.spans.exists():
        raise click.UsageError(f"no record at {data.root}")
    lock = take_sampler_lock(data)
    if lock is None:
        click.echo("a gateway worker is running the sampler on this data directory; nothing done", err=True)
        sys.exit(1)
    try:
        results = SamplingPass(config, data).run_until_caught_up(flush=flush)
    finally:
        lock.release()
    decided = [d for r in results for d in r.decisions]
    kept = sum(d.keep and d.traces for d in decided)
    click.echo(
        f"read {sum(r.spans_read for r in results)} spans from {sum(r.segments_read for r in results)} segments; "
        f"decided {sum(d.traces for d in decided)} traces: kept {kept}, dropped "
        f"{sum((not d.keep) and d.traces for d in decided)}; {results[-1].pending} still waiting"
    )
    if not config.sampling.enabled:
        click.echo("note: sampling.enabled is false, so compaction keeps every span; this is a sampled view only")


@sample.command("gc")
@data_options
def gc_cmd(data_dir: str | None, config_path: str | None) -> None:
    """With the gateway stopped: drop dropped traces' spans from every segment and release their payloads."""
    from airlock.errors import GatewayRunning
    from airlock.sampling.collect import collect

    data = _data_dir(data_dir, config_path)
    if not data.spans.exists():
        raise click.UsageError(f"no record at {data.root}")
    try:
        r = collect(data)
    except GatewayRunning as e:
        click.echo(f"airlock: {e}", err=True)
        sys.exit(1)
    click.echo(
        f"removed {r.spans_removed} spans of dropped traces from {r.segments_rewritten} segments; released "
        f"{r.blobs_released} payloads no remaining span names, rewriting {r.packs_rewritten} packs: "
        f"{r.pack_bytes_before / 1024:,.0f} KiB -> {r.pack_bytes_after / 1024:,.0f} KiB on disk"
    )


@sample.command("show")
@data_options
@click.argument("trace")
def show_cmd(data_dir: str | None, config_path: str | None, trace: str) -> None:
    """The sampling decision for one trace: kept or dropped, why, its probability and adjusted count.
    TRACE: a trace id or a unique prefix."""
    from airlock.store.embedded.sampling import embedded_sampling_stores

    data = _data_dir(data_dir, config_path)
    rows = embedded_sampling_stores(data).report.decisions_of(trace.lower())
    ids = {r["trace_id"] for r in rows}
    if len(ids) != 1:
        raise click.UsageError(f"{len(ids)} decided traces match {trace!r}" + ("" if ids else " (not decided yet?)"))
    first = rows[0]
    verdict = "kept" if first["keep"] else ("dropped, in the replay reserve" if first["reserve"] else "dropped")
    click.echo(
        f"trace {first['trace_id']}: {verdict} ({first['reason']}) in pass {first['pass']}; key {first['key']}; "
        f"probability {first['probability']:.4g}, adjusted count {first['adjusted_count']:.4g}"
        + (f"; decided early ({first['early']})" if first["early"] else "")
    )
    for r in rows:
        label = "decided" if r["traces"] else "late spans"
        click.echo(
            f"  {label}: {r['spans']} spans, status {r['status']}, {r['errors']} errors, "
            f"tokens {r['input_tokens']}/{r['output_tokens']}, ${r['cost_usd']:.6f}, {r['duration_ms']:.1f} ms"
        )


def _n(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.4f}" if abs(v) < 10 else f"{v:,.0f}"
    return f"{v:,}"


def _err(est: float | None, exact: float | None) -> str:
    if not exact:
        return "-"
    return f"{(est or 0) / exact - 1:+.1%}"


def print_status(console: Console, status: Any) -> None:
    last = fmt_time(status.last_pass_ns) if status.last_pass_ns else "never"
    console.print(
        f"[bold]tail sampling[/bold]: {status.passes} passes (last {last}), {status.pending} traces waiting, "
        f"{status.unread_segments} span segments not read yet"
        + (
            f", {status.skipped_segments} merged before sampling was on (not decided)"
            if status.skipped_segments
            else ""
        )
    )
    if status.early:
        why = {"spans": "giant traces (max_spans_per_trace)", "pending": "oldest waiting (max_pending_traces)"}
        console.print("decided early: " + ", ".join(f"{n} {why.get(k, k)}" for k, n in status.early.items()))
    t = RecordTable(title="What was kept and why (one row per outcome and reason)")
    for col in ("outcome", "reason", "traces", "spans", "p (min..max)"):
        t.add_column(col, justify="right" if col in ("traces", "spans") else "left")
    for r in status.by_reason:
        p = f"{r['min_p']:.4g}" if r["min_p"] == r["max_p"] else f"{r['min_p']:.4g}..{r['max_p']:.4g}"
        t.add_row(r["outcome"], r["reason"], _n(r["traces"]), _n(r["spans"]), p)
    console.print(t)
    t = RecordTable(title="Per key: current rate, kept, and totals estimated from kept traces vs exact")
    for col in ("key", "rate now", "kept", "traces", "est.", "spans", "est.", "tokens", "est.", "cost $", "est."):
        t.add_column(col, justify="left" if col == "key" else "right")
    for k in status.keys:
        p = k["probability"]
        t.add_row(
            k["key"],
            "-" if p is None else ("1" if p >= 1 else f"1/{1 / p:,.0f}"),
            _n(k["kept"]),
            _n(k["traces"]),
            f"{_n(k['traces_est'])} ({_err(k['traces_est'], k['traces'])})",
            _n(k["spans"]),
            f"{_n(k['spans_est'])} ({_err(k['spans_est'], k['spans'])})",
            _n(k["tokens"]),
            f"{_n(k['tokens_est'])} ({_err(k['tokens_est'], k['tokens'])})",
            _n(k["cost"]),
            _n(k["cost_est"]),
        )
    tot = status.totals
    t.add_row(
        styled("[bold]all"),
        "",
        "",
        _n(tot["traces"][0]),
        f"{_n(tot['traces'][1])} ({_err(tot['traces'][1], tot['traces'][0])})",
        _n(tot["spans"][0]),
        f"{_n(tot['spans'][1])} ({_err(tot['spans'][1], tot['spans'][0])})",
        _n(tot["tokens"][0]),
        f"{_n(tot['tokens'][1])} ({_err(tot['tokens'][1], tot['tokens'][0])})",
        _n(tot["cost"][0]),
        _n(tot["cost"][1]),
    )
    console.print(t)
    if status.drops:
        t = RecordTable(title="Dropped traces: what their summaries keep (exact)")
        for col in ("key", "status", "traces", "spans", "tokens", "cost $", "payloads kept (reserve)"):
            t.add_column(col, justify="left" if col in ("key", "status") else "right")
        for d in status.drops:
            t.add_row(
                d["key"],
                d["status"],
                _n(d["traces"]),
                _n(d["spans"]),
                _n(d["tokens"]),
                _n(d["cost"]),
                _n(d["reserved"]),
            )
        console.print(t)
    if status.budget_per_hour:
        use = ", ".join(
            f"{fmt_time(h['hour_ns'])[11:16]} {h['kept_spans'] / status.budget_per_hour:.0%}"
            for h in status.kept_spans_by_hour
        )
        console.print(f"span budget {status.budget_per_hour:,}/hour; kept spans by hour started: {use or 'none'}")


@sample.command("status")
@data_options
@click.option("--json", "as_json", is_flag=True)
def status_cmd(data_dir: str | None, config_path: str | None, as_json: bool) -> None:
    """What the sampled record kept and why: reasons, rates, budget use, drop summaries, estimates vs exact."""
    from airlock.sampling.report import sampling_status

    data = _data_dir(data_dir, config_path)
    if not data.root.exists():
        raise click.UsageError(f"no data directory at {data.root}")
    budget = _config(config_path).sampling.span_budget_per_hour if config_path else None
    status = sampling_status(data, budget)
    if as_json:
        click.echo(orjson.dumps(status.as_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    print_status(make_console(), status)
