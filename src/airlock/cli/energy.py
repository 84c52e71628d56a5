"""`airlock energy`: energy per request from the record (profiles or measured), the NVML sampler, and
the bundled profiles with where their numbers come from."""

from __future__ import annotations

import csv
import signal
import sys
from typing import Any

import click
import orjson

from airlock.cli.config_for import config_for
from airlock.cli.records import data_options
from airlock.cli.render import RecordTable, parse_when
from airlock.cli.render import console as make_console


@click.group()
def energy() -> None:
    """Energy per request: tokens per joule, watt-hours per task, CO2e."""


def _num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:,.{digits}f}" if abs(v) >= 0.01 else f"{v:.2e}"


@energy.command("report")
@data_options
@click.option(
    "--by",
    default="model_tier,batch_bucket,cache",
    show_default=True,
    help="Comma list: model_tier, batch_bucket, cache, tenant, task_type, feature, model, upstream, task, source.",
)
@click.option("--since", default=None, help="15m, 6h, 2d, or an ISO time.")
@click.option("--until", default=None)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
def report_cmd(
    data_dir: str | None, config_path: str | None, by: str, since: str | None, until: str | None, fmt: str
) -> None:
    """Tokens per joule, joules per token, Wh per task and CO2e, grouped."""
    from airlock.energy.report import DIMENSIONS, energy_report

    dims = [d.strip() for d in by.split(",") if d.strip()]
    bad = [d for d in dims if d not in DIMENSIONS]
    if bad:
        raise click.BadParameter(f"{bad}: choose from {', '.join(DIMENSIONS)}", param_hint="--by")
    config = config_for(data_dir, config_path)
    report = energy_report(config, dims, parse_when(since) if since else None, parse_when(until) if until else None)
    if fmt == "json":
        sys.stdout.write(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    if fmt == "csv":
        rows = [*report.rows, {**{d: "(total)" for d in dims}, **report.total}]
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        return
    console = make_console()
    t = RecordTable(title=f"Energy by {', '.join(dims)} (grid {report.grid_gco2e_per_kwh:g} gCO2e/kWh)")
    for d in dims:
        t.add_column(d)
    cols = ("calls", "tokens", "J", "tokens/J", "J/token", "J/out tok", "Wh/task", "gCO2e", "measured", "approx")
    for c in cols:
        t.add_column(c, justify="right")

    def add(r: dict[str, Any], label: list[str], style: str | None = None) -> None:
        t.add_row(
            *label,
            _num(r["calls"]),
            _num((r["input_tokens"] or 0) + (r["output_tokens"] or 0)),
            _num(r["joules"], 1),
            _num(r["tokens_per_j"], 2),
            _num(r["j_per_token"], 4),
            _num(r["j_per_output_token"], 4),
            _num(r["wh_per_task"], 4),
            _num(r["gco2e"], 3),
            _num(r["measured_calls"]),
            _num(r["approximate_calls"]),
            style=style,
        )

    for r in report.rows:
        add(r, [str(r[d]) for d in dims])
    if report.total["calls"]:
        add(report.total, ["(total)"] + [""] * (len(dims) - 1), style="bold")
    console.print(t)
    for gpu in report.devices:
        console.print(
            f"GPU {gpu.device} ({gpu.upstream}): read {gpu.read_j:,.1f} J = attributed {gpu.attributed_j:,.1f} J"
            f" + idle {gpu.idle_j:,.1f} J over {gpu.intervals} intervals ({gpu.short_intervals} shorter than the"
            f" counter's update period; {gpu.unmeasured_intervals} unmeasured: counter reset)"
        )
    for u in report.no_energy:
        console.print(
            f"[yellow]{u['calls']} calls to {u['model']} on {u['upstream']} have no energy: add a profile under "
            "energy.profiles, or bind its GPUs under energy.gpus"
        )


@energy.command("sample")
@click.option("--config", "-c", "config_path", default="airlock.yaml", show_default=True)
@click.option("--duration", type=float, default=None, help="Seconds to sample (default: until interrupted).")
@click.option(
    "--recording",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Replay readings recorded on a GPU host (JSON lines of device, t_ns, energy_mj) instead of NVML.",
)
def sample_cmd(config_path: str, duration: float | None, recording: str | None) -> None:
    """Read the energy counter of every GPU under energy.gpus and store the readings for the report."""
    from pathlib import Path

    from airlock.energy.sampler import Sampler
    from airlock.energy.sources import EnergyUnavailable, NvmlSource, RecordedSource, load_recording
    from airlock.store import build_stores

    config = config_for(None, config_path, must_exist=False)
    Path(config.data_dir).mkdir(parents=True, exist_ok=True)
    devices = [g.device for g in config.energy.gpus]
    if not devices:
        raise click.UsageError("no GPUs to sample: bind them under energy.gpus [{device, upstream}]")
    try:
        source: Any = RecordedSource(load_recording(Path(recording))) if recording else NvmlSource()
    except (EnergyUnavailable, ValueError) as e:
        raise click.UsageError(str(e)) from None
    interval = config.energy.sample_interval_ms / 1000
    store = build_stores(config).open_energy_readings()
    try:
        sampler = Sampler(source, devices, store, 0.0 if recording else interval, stop_when_dry=bool(recording))
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    signal.signal(signal.SIGTERM, lambda *_: sampler.stop())
    rounds = None if duration is None else max(1, int(duration / interval))
    try:
        stored = sampler.run(rounds)
    except KeyboardInterrupt:
        stored = sampler.stored
    finally:
        store.close()
    click.echo(f"stored {stored} readings from {len(devices)} device(s) ({sampler.failed_reads} reads failed)")


@energy.command("presets")
def presets_cmd() -> None:
    """The bundled energy profiles, their points, and where the numbers come from."""
    from airlock.energy import presets

    console = make_console()
    t = RecordTable(title="Energy presets (J per token at batch size; facility J = GPU J / (1 - idle) x PUE)")
    for c in ("preset", "tier", "batch: prefill / decode J per token", "cache discount", "idle", "PUE"):
        t.add_column(c)
    for name, p in presets.PRESETS.items():
        pts = ", ".join(f"{b}: {pf:.3f}/{d:.3f}" for b, pf, d in p.points)
        t.add_row(name, p.tier, pts, f"{p.cache_hit_discount:.0%}", f"{p.idle_share:.0%}", f"{p.pue:g}")
    console.print(t)
    console.print((presets.__doc__ or "").strip())
