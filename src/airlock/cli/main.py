"""`airlock`: serve, sim, demo, config check, status, traces, blob."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from airlock.cli.cost import cost
from airlock.cli.energy import energy
from airlock.cli.records import blob, status, traces
from airlock.cli.replay import replay
from airlock.cli.sampling import sample
from airlock.cli.telemetry import query, slices
from airlock.cli.tokens import tokens
from airlock.config import load_config
from airlock.config.load import environment_problems
from airlock.config.schema import Config
from airlock.errors import ConfigError

DEFAULT_CONFIG = "airlock.yaml"


def load_or_exit(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as e:
        click.echo(f"airlock: config refused: {e.detail}", err=True)
        sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="airlock")
def cli() -> None:
    """Airlock: an egress-free gateway and flight recorder for LLM agents."""


@cli.command()
@click.option("--config", "-c", "config_path", default=DEFAULT_CONFIG, show_default=True, type=click.Path())
@click.option("--workers", "-w", type=int, default=None, help="Worker processes (default: server.workers).")
@click.option("--port", type=int, default=None, help="Override server.port.")
@click.option("--host", default=None, help="Override server.host.")
def serve(config_path: str, workers: int | None, port: int | None, host: str | None) -> None:
    """Run the gateway."""
    from airlock.gateway.server import serve as run

    config = load_or_exit(config_path)
    problems = environment_problems(config, os.environ)
    if problems:
        click.echo(f"airlock: config refused: {config_path}: " + "; ".join(problems), err=True)
        sys.exit(2)
    server = config.server.model_copy(update={k: v for k, v in (("port", port), ("host", host)) if v is not None})
    config = config.model_copy(update={"server": server})
    sys.exit(run(config, workers))


@cli.command()
@click.option("--port", type=int, default=9001, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--region", default="sim-local", show_default=True)
@click.option("--ttft-ms", type=float, default=0.0, show_default=True, help="Time to first token.")
@click.option("--tokens-per-s", type=float, default=0.0, show_default=True, help="Decode speed; 0 = no delay.")
@click.option(
    "--output-tokens", type=int, default=24, show_default=True, help="Reply length when a request sets no max_tokens."
)
@click.option("--error-rate", type=float, default=0.0, show_default=True)
@click.option("--error-kinds", default="500", show_default=True, help="Comma list of 500,503,429,timeout,disconnect.")
@click.option("--tokenizer", default="cl100k_base", show_default=True)
@click.option("--style", type=click.Choice(["plain", "terse"]), default="plain", show_default=True)
@click.option("--models", default="sim-large,sim-small", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-tools", is_flag=True, help="Answer in text even when tools are offered (a different model).")
def sim(
    port: int,
    host: str,
    region: str,
    ttft_ms: float,
    tokens_per_s: float,
    output_tokens: int,
    error_rate: float,
    error_kinds: str,
    tokenizer: str,
    style: str,
    models: str,
    seed: int,
    no_tools: bool,
) -> None:
    """Run a simulated OpenAI-compatible upstream (a simulator, not a model)."""
    from airlock.sim import SimProfile, run_sim

    profile = SimProfile(
        region=region,
        ttft_ms=ttft_ms,
        tokens_per_s=tokens_per_s,
        output_tokens=output_tokens,
        error_rate=error_rate,
        error_kinds=tuple(k for k in error_kinds.split(",") if k),
        tokenizer=tokenizer,
        answer_style=style,
        models=models.split(","),
        seed=seed,
        tool_calls=not no_tools,
    )
    try:
        profile.validate()
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    run_sim(profile, host, port)


@cli.command()
@click.option("--data-dir", default=".demo-data", show_default=True, type=click.Path())
@click.option("--tasks", type=int, default=24, show_default=True, help="Agent tasks to run.")
def demo(data_dir: str, tasks: int) -> None:
    """Two simulated regions, the gateway, a scripted agent workload, then a report."""
    from airlock.demo import run_demo

    sys.exit(run_demo(Path(data_dir), tasks))


@cli.group()
def config() -> None:
    """Configuration file tools."""


@config.command("check")
@click.argument("path", type=click.Path())
def config_check(path: str) -> None:
    """Validate a config file without starting anything."""
    cfg = load_or_exit(path)
    for problem in environment_problems(cfg, os.environ):  # `serve` refuses these; here they only warn
        click.echo(f"airlock: warning: {path}: {problem}", err=True)
    click.echo(
        f"{path}: ok ({len(cfg.upstreams)} upstreams, {len(cfg.routes)} routes, "
        f"{len(cfg.api_keys)} API keys, data in {cfg.data_dir})"
    )


cli.add_command(status)
cli.add_command(traces)
cli.add_command(blob)
cli.add_command(tokens)
cli.add_command(replay)
cli.add_command(cost)
cli.add_command(energy)
cli.add_command(sample)
cli.add_command(query)
cli.add_command(slices)


def main() -> None:
    cli()
