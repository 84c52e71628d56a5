"""Formatting helpers for terminal output."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import click
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Table as _RichTable
from rich.text import Text

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(value: str) -> int:
    """'15m', '6h', '2d' ago, or an ISO-8601 time, as nanoseconds since the epoch."""
    m = _DURATION.match(value.strip())
    if m:
        return int((time.time() - float(m.group(1)) * _UNIT_S[m.group(2)]) * 1e9)
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a duration like 15m, 6h, 2d or an ISO time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1e9)


def fmt_time(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def console() -> Console:
    """A console that is wide enough for the tables when output goes to a file or a pipe."""
    import sys

    return Console() if sys.stdout.isatty() else Console(width=160)


def safe(value: object) -> str:
    """Recorded text (a status message, a model or tenant name, an attribute) for a rich markup string:
    its square brackets are shown as they are, never read as markup."""
    return escape(str(value))


def styled(markup: str) -> Text:
    """A table cell whose markup is ours (a colour), for a RecordTable, which shows str cells literally."""
    return Text.from_markup(markup)


class RecordTable(_RichTable):
    """A rich Table whose str cells are shown literally: every CLI table holds recorded text, so a value
    like '[/bold]' is printed, not parsed (it crashed `traces show`). Our own styling goes in as Text."""

    def add_row(self, *renderables: RenderableType | None, **kwargs: object) -> None:
        cells = [Text(r) if isinstance(r, str) else r for r in renderables]
        super().add_row(*cells, **kwargs)  # type: ignore[arg-type]
