"""`airlock tokens`: count offline, list the bundled tokenizers, and read drift against the bill."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO

import click
import orjson

from airlock.cli.config_for import stores_for
from airlock.cli.records import data_options
from airlock.cli.render import RecordTable, parse_when, safe, styled
from airlock.cli.render import console as make_console
from airlock.tokens import TokenizerUnavailable, available, family_of, get_tokenizer, load_local
from airlock.tokens.chat import count_request, request_text
from airlock.tokens.drift import CONFIDENCE, COVERAGE, drift_cells
from airlock.tokens.registry import Tokenizer
from airlock.tokens.scripts import dominant_script, script_mix


@click.group()
def tokens() -> None:
    """Offline token counting and drift against provider-reported usage."""


def _tokenizer_for(model: str | None, tokenizer: str | None, config_path: str | None) -> Tokenizer:
    try:
        if tokenizer:
            return load_local(tokenizer) if Path(tokenizer).is_file() else get_tokenizer(tokenizer)
        from airlock.config import load_config
        from airlock.errors import ConfigError

        try:
            cfg = load_config(config_path or "airlock.yaml")
        except ConfigError as e:
            raise click.UsageError(f"--model needs a config naming its tokenizer: {e.detail}") from None
        for up in cfg.upstreams:
            for m in up.models:
                if m.name == model and m.tokenizer:
                    return cfg.tokenizer(m.tokenizer)
        raise click.UsageError(f"no model {model!r} with a tokenizer in the config")
    except TokenizerUnavailable as e:
        raise click.UsageError(str(e)) from None


@tokens.command("count")
@click.argument("file", type=click.File("rb"), default="-")
@click.option("--model", "-m", default=None, help="A model from the config; counts with its tokenizer.")
@click.option("--tokenizer", "-t", default=None, help="A bundled tokenizer name, or a tokenizer.json path.")
@click.option("--config", "-c", "config_path", default=None, help="Config for --model (default airlock.yaml).")
@click.option("--json", "as_json", is_flag=True)
def count_cmd(
    file: IO[bytes], model: str | None, tokenizer: str | None, config_path: str | None, as_json: bool
) -> None:
    """Count the tokens of FILE (text, or a JSON chat/completions request with its formatting overhead)."""
    if bool(model) == bool(tokenizer):
        raise click.UsageError("give exactly one of --model or --tokenizer")
    tok = _tokenizer_for(model, tokenizer, config_path)
    raw = file.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and any(k in body for k in ("messages", "prompt", "input")):
        n, text, kind = count_request(tok, body), request_text(body), "request"
    else:
        text = raw.decode("utf-8", errors="replace")
        n, kind = tok.count(text), "text"
    mix = script_mix(text)
    result = {
        "tokens": n,
        "tokenizer": tok.name,
        "family": tok.family,
        "counted_as": kind,
        "script": dominant_script(mix),
        "script_mix": mix,
        "characters": len(text),
    }
    if as_json:
        click.echo(orjson.dumps(result).decode())
    else:
        click.echo(f"{n} tokens ({tok.name}, {kind}; script {result['script']}, {len(text)} characters)")


@tokens.command("list")
def list_cmd() -> None:
    """The bundled tokenizers, and whether each loads here."""
    t = RecordTable(title="bundled tokenizers (no network: files from installed packages, sha256-checked)")
    for col in ("name", "family", "status"):
        t.add_column(col)
    failed = False
    for name in available():
        try:
            get_tokenizer(name)
            status = styled("[green]ok[/green]")
        except TokenizerUnavailable as e:
            status, failed = styled(f"[red]{safe(e)}[/red]"), True
        t.add_row(name, family_of(name), status)
    make_console().print(t)
    if failed:
        sys.exit(1)


@tokens.command("drift")
@data_options
@click.option(
    "--by", default="model,script", show_default=True, help="Comma list: model,script,upstream,tokenizer,tenant."
)
@click.option("--since", default=None, help="15m, 6h, 2d, or an ISO time.")
@click.option("--what", type=click.Choice(["input", "output"]), default="input", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def drift_cmd(
    data_dir: str | None, config_path: str | None, by: str, since: str | None, what: str, as_json: bool
) -> None:
    """Provider-reported tokens against the local count (provider/local - 1), per cell, with the margin
    the pre-flight check applies."""
    dims = [d.strip() for d in by.split(",") if d.strip()]
    reader = stores_for(data_dir, config_path).drift
    try:
        cells = drift_cells(reader, dims, parse_when(since) if since else None, what)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--by") from None
    if as_json:
        click.echo(
            orjson.dumps(
                [
                    {
                        **c.key,
                        "n": c.n,
                        "mean": c.mean,
                        "p50": c.p50,
                        "p95": c.p95,
                        "p99": c.p99,
                        "max": c.max,
                        "margin": c.margin,
                        "flags": c.flags,
                    }
                    for c in cells
                ]
            ).decode()
        )
        return
    if not cells:
        click.echo("no spans with both provider usage and a local count (is a tokenizer set for the models?)")
        return
    t = RecordTable(
        title=f"{what} token drift: provider / local - 1 (margin covers {COVERAGE:.0%} of requests with "
        f"{CONFIDENCE:.0%} confidence)"
    )
    for d in dims:
        t.add_column(d)
    for col in ("n", "mean", "p50", "p95", "p99", "max", "margin", "flags"):
        t.add_column(col, justify="left" if col == "flags" else "right")
    for c in cells:
        margin = f"{c.margin:+.1%}" if c.margin is not None else styled("[dim]n<59[/dim]")
        flags = "; ".join(c.flags)
        style = "[bold red]" if c.flags else ""
        t.add_row(
            *(c.key[d] for d in dims),
            str(c.n),
            f"{c.mean:+.1%}",
            f"{c.p50:+.1%}",
            f"{c.p95:+.1%}",
            f"{c.p99:+.1%}",
            f"{c.max:+.1%}",
            margin,
            f"{style}{flags}" if flags else "",
        )
    make_console().print(t)
