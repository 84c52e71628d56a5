"""The results as tables: rich tables on the terminal and the markdown report (bench/RESULTS.md)."""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass, field

from rich.table import Table

from .common import AIRLOCK, CHAT_BODY, DIRECT, LITELLM, PASSTHROUGH, STREAM_TOKENS, console
from .litellm_proxy import LiteLLMStatus
from .streaming import StreamResult
from .wrk import WrkResult, combine, round_ratios


@dataclass
class Report:
    machine: list[tuple[str, str]]
    throughput: list[WrkResult]
    streams: list[StreamResult]
    litellm: LiteLLMStatus
    args: argparse.Namespace
    notes: list[str] = field(default_factory=list)


Grid = tuple[list[str], list[list[str]]]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def f_ms(v: float, digits: int = 2) -> str:
    return "—" if v != v else f"{v:.{digits}f}"


def f_add(v: float) -> str:
    return "—" if v != v else f"{v:+.3f}"


def f_ratios(ratios: list[float]) -> str:
    """The median ratio over the rounds, and their range when there was more than one."""
    if not ratios:
        return "—"
    mid = f"{statistics.median(ratios):.2f}×"
    return mid if len(ratios) == 1 else f"{mid} ({min(ratios):.2f}–{max(ratios):.2f})"


def by(results: list[WrkResult], path: str, conns: int) -> WrkResult | None:
    return next((r for r in results if r.path == path and r.conns == conns), None)


def throughput_grid(runs: list[WrkResult], litellm: LiteLLMStatus) -> Grid:
    head = ["conns", "path", "req/s", "p50 ms", "p99 ms", "+p50 vs direct ms", "CPU µs/req", "non-2xx/errors",
            "Airlock ÷ pass-through", "Airlock ÷ LiteLLM"]  # fmt: skip
    rows = []
    results = combine(runs)
    for r in results:
        direct = by(results, DIRECT, r.conns)
        added = r.p50_ms - direct.p50_ms if direct and r.path != DIRECT else float("nan")
        vs_pt = vs_ll = ""
        if r.path == AIRLOCK:
            vs_pt = f_ratios(round_ratios(runs, AIRLOCK, PASSTHROUGH, r.conns))
            vs_ll = f_ratios(round_ratios(runs, AIRLOCK, LITELLM, r.conns)) if by(results, LITELLM, r.conns) else "n/a"
        rps = f"{r.rps:.0f}" if r.requests else "—"
        errors = ("run failed" if r.failed else str(r.errors)) + (f" ({r.note})" if r.note else "")
        cpu = f"{r.cpu_us:.0f}" if r.cpu_us == r.cpu_us else "—"  # NaN when unknown
        rows.append([str(r.conns), r.path, rps, f_ms(r.p50_ms), f_ms(r.p99_ms), f_add(added), cpu, errors, vs_pt,
                     vs_ll])  # fmt: skip
    if not litellm.available:
        rows.append(["all", LITELLM, "unavailable", "—", "—", "—", "—", litellm.reason, "", ""])
    return head, rows


def stream_grid(results: list[StreamResult]) -> Grid:
    head = ["path", "streams ok", "errors", "TTFT p50 ms", "TTFT p99 ms", "+TTFT p50 vs direct ms",
            "first body byte p50 ms", "full stream p50 ms"]  # fmt: skip
    direct = next((s for s in results if s.path == DIRECT), None)
    rows = []
    for s in results:
        p50 = pct(s.ttft_ms, 50)
        added = p50 - pct(direct.ttft_ms, 50) if direct and s is not direct else float("nan")
        errors = str(s.errors) + (f" ({s.last_error})" if s.last_error else "")
        rows.append([s.path, str(len(s.ttft_ms)), errors, f_ms(p50, 3), f_ms(pct(s.ttft_ms, 99), 3), f_add(added),
                     f_ms(pct(s.first_byte_ms, 50), 3), f_ms(pct(s.total_ms, 50))])  # fmt: skip
    return head, rows


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def ratio_target(runs: list[WrkResult], other: str, floor: float, conc: list[int]) -> tuple[str, bool | None]:
    """Met when the median over the rounds reaches the floor at every concurrency."""
    parts, oks = [], []
    for c in conc:
        ratios = round_ratios(runs, AIRLOCK, other, c)
        if ratios:
            parts.append(f"c={c}: {f_ratios(ratios)}")
            oks.append(statistics.median(ratios) >= floor)
    return ("; ".join(parts) or "not measured"), (all(oks) if oks else None)


def targets_grid(report: Report) -> Grid:
    runs, conc = report.throughput, report.args.concurrency
    res = combine(runs)
    pt_text, pt_ok = ratio_target(runs, PASSTHROUGH, 2 / 3, conc)
    ll_text, ll_ok = ratio_target(runs, LITELLM, 30, conc)
    if not report.litellm.available:
        ll_text = f"LiteLLM unavailable: {report.litellm.reason}"
    a8, d8 = by(res, AIRLOCK, 8), by(res, DIRECT, 8)
    lat = a8.p50_ms - d8.p50_ms if a8 and d8 else float("nan")  # p50 is NaN for a run without requests
    lat_text = f"{f_add(lat)} ms (Airlock p50 {f_ms(a8.p50_ms)} − direct p50 {f_ms(d8.p50_ms)})" if a8 and d8 else "—"
    streams = {s.path: s for s in report.streams}
    ttft = float("nan")
    if AIRLOCK in streams and DIRECT in streams:
        ttft = pct(streams[AIRLOCK].ttft_ms, 50) - pct(streams[DIRECT].ttft_ms, 50)
    rows = [
        ["throughput ≥ 2/3 of the bare pass-through", pt_text, verdict(pt_ok)],
        ["throughput ≥ 30× LiteLLM's", ll_text, verdict(ll_ok)],
        ["added p50 latency < 1 ms at 8 connections", lat_text, verdict(None if lat != lat else lat < 1.0)],
        [f"added TTFT ≤ 1 ms at p50, {STREAM_TOKENS}-token stream", f"{f_add(ttft)} ms",
         verdict(None if ttft != ttft else ttft <= 1.0)],
    ]  # fmt: skip
    return ["target (from the issue)", "measured", "verdict"], rows


def md_table(grid: Grid) -> str:
    head, rows = grid
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(" ".join(c.split()).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def rich_table(title: str, grid: Grid) -> Table:
    head, rows = grid
    table = Table(title=title, title_justify="left")
    for h in head:
        table.add_column(h, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


PATHS_TEXT = f"""\
- **{DIRECT}**: wrk straight to `airlock sim` (simulated OpenAI-compatible upstream, no delays). The ceiling.
- **{PASSTHROUGH}**: `bench/passthrough.py`, aiohttp + uvloop, reads the body and relays the upstream's bytes;
  no parsing, no auth, no recording. The floor for any Python gateway on the same libraries.
- **{AIRLOCK}**: `airlock serve`, one worker, bearer-key auth, routing, and the flight recorder on (temporary data dir;
  the worker's writer process at its default scheduling: `writer_nice: 10`, `writer_idle: true`; see the notes for
  whether SCHED_IDLE was allowed, and any catch-ups).
- **{LITELLM}**: LiteLLM's proxy (`litellm --config ... --num_workers 1`) with a master key, model `sim-large` mapped
  to `openai/sim-large` at the sim; `LITELLM_LOCAL_MODEL_COST_MAP=True`, HTTP(S) proxy variables pointing at a local
  sink that refuses and logs any outbound attempt.

Each row: `wrk -t1 -cN -dD` with `bench/chat.lua` POSTing `{json.dumps(CHAT_BODY)}`, after a short warm-up,
in R rounds with the paths interleaved in each round; a row gives the median of its rounds (req/s, p50, p99,
CPU), and a ratio is taken round by round (each round ran both paths, one right after the other) and given
as the median with the range over the rounds in brackets. A target is met when that median reaches it.
"+p50 vs direct" is the path's p50 minus the direct p50 at the same
concurrency; "CPU µs/req" is the serving process's user + system CPU time during the run (all its
descendants included: worker processes, and Airlock's writer process) divided by the requests served:
steadier than req/s on a shared machine, since it does not depend on what else got the cores;
"non-2xx/errors" counts HTTP status ≥ 400 plus socket errors and timeouts. The streaming rows are sequential
requests (one connection) for a {STREAM_TOKENS}-token SSE stream from a second sim started with
`--output-tokens {STREAM_TOKENS}`, one request per path per round; TTFT is the time from sending the request to
receiving the first SSE event with non-empty `delta.content`; "first body byte" is the time to the first line of
the response body."""


def markdown(report: Report) -> str:
    a = report.args
    machine = "\n".join(f"- {k}: {v}" for k, v in report.machine)
    notes = "\n".join(f"- {' '.join(n.split())}" for n in report.notes) or "- none"
    conc = ",".join(map(str, a.concurrency))
    return f"""# Gateway benchmark

Produced by `python bench/gateway.py --duration {a.duration:g} --concurrency {conc} --rounds {a.rounds}\
{" --skip-litellm" if a.skip_litellm else ""} --stream-requests {a.stream_requests}`.
Only ratios within one run are meaningful: the machine is small and shared, and wrk, the sim and the
system under test all run on it.

## Machine

{machine}

## Paths

{PATHS_TEXT}

## Targets

{md_table(targets_grid(report))}

## Throughput and latency (non-streaming, {a.rounds} rounds of {a.duration:g} s per row)

{md_table(throughput_grid(report.throughput, report.litellm))}

## Time to first token ({STREAM_TOKENS}-token stream, {a.stream_requests} sequential requests per path)

{md_table(stream_grid(report.streams))}

## Notes

{notes}
"""


def print_report(report: Report) -> None:
    console.print(rich_table("Throughput and latency", throughput_grid(report.throughput, report.litellm)))
    console.print(rich_table(f"Time to first token, {STREAM_TOKENS}-token stream", stream_grid(report.streams)))
    console.print(rich_table("Targets", targets_grid(report)))
    for note in report.notes:
        console.print(f"note: {note}")
