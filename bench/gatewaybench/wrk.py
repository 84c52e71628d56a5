"""Non-streaming throughput and latency: wrk with bench/chat.lua, and its BENCHJSON line parsed."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import BENCH, Target, console
from .procs import Procs

LUA = BENCH / "chat.lua"


@dataclass
class WrkResult:
    path: str
    conns: int
    rps: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    requests: int = 0
    errors: int = 0  # HTTP status >= 400 plus socket errors and timeouts
    failed: bool = False  # wrk gave no result
    note: str = ""
    cpu_us: float = float("nan")  # CPU time of the serving process tree per request: steadier than req/s
    round: int = 0  # which round of the interleaved paths; a combined row holds each round's req/s
    rounds_rps: list[float] = field(default_factory=list)


def run_wrk(url: str, key: str, conns: int, duration: float) -> dict[str, Any]:
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(duration))}s", "--timeout", "10s", "-s", str(LUA), url,
            "--", key]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            return dict(json.loads(line[len("BENCHJSON ") :]))
    raise RuntimeError(f"wrk gave no result (exit {done.returncode}): {(done.stderr or done.stdout)[-300:]}")


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process and all its descendants (workers, Airlock's writer processes), from /proc."""
    if pid is None:
        return float("nan")
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        with contextlib.suppress(OSError, ValueError):
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
    total = 0
    for p in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return total / os.sysconf("SC_CLK_TCK")


def measure(target: Target, conns: int, duration: float, round_no: int = 0) -> WrkResult:
    result = WrkResult(target.name, conns, note=target.note, round=round_no)
    cpu_before = cpu_seconds(target.pid)
    try:
        raw = run_wrk(target.url, target.key, conns, duration)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        result.failed, result.note = True, str(e)[:200]
        return result
    errors = ("status_errors", "connect_errors", "read_errors", "write_errors", "timeouts")
    result.requests = int(raw["requests"])
    result.errors = sum(int(raw[k]) for k in errors)
    result.rps = raw["requests"] / (raw["duration_us"] / 1e6)
    if result.requests:
        result.p50_ms, result.p99_ms = raw["p50_us"] / 1000, raw["p99_us"] / 1000
        result.cpu_us = (cpu_seconds(target.pid) - cpu_before) / result.requests * 1e6
    return result


def run_throughput(
    targets: list[Target],
    concurrency: list[int],
    duration: float,
    warmup: float,
    procs: Procs,
    notes: list[str],
    rounds: int = 1,
) -> list[WrkResult]:
    """Every path at every concurrency, `rounds` times; one result per run (see `combine`)."""
    for target in targets:
        if warmup > 0:
            with contextlib.suppress(RuntimeError, OSError, subprocess.TimeoutExpired):
                run_wrk(target.url, target.key, 8, warmup)
    procs.note_deaths(notes)
    results = []
    # Paths interleaved within each round, so drift on a noisy machine hits all alike within a round.
    for conns in concurrency:
        for round_no in range(1, rounds + 1):
            for target in targets:
                result = measure(target, conns, duration, round_no)
                console.print(
                    f"  c={conns:<3} round {round_no} {target.name:<18} {result.rps:9.0f} req/s  "
                    f"p50 {result.p50_ms:8.2f} ms  p99 {result.p99_ms:8.2f} ms  errors {result.errors}  "
                    f"cpu {result.cpu_us:6.0f} us/req"
                )
                results.append(result)
                procs.note_deaths(notes)
                time.sleep(0.3)
    return results


def _median(values: list[float]) -> float:
    values = [v for v in values if v == v]  # NaN: a round without requests
    return statistics.median(values) if values else float("nan")


def combine(results: list[WrkResult]) -> list[WrkResult]:
    """One row per path and concurrency: the median of its rounds (req/s, p50, p99, CPU), errors summed."""
    groups: dict[tuple[str, int], list[WrkResult]] = {}
    for r in results:
        groups.setdefault((r.path, r.conns), []).append(r)
    out = []
    for (path, conns), runs in groups.items():
        ok = [r for r in runs if not r.failed]
        out.append(
            WrkResult(
                path,
                conns,
                rps=_median([r.rps for r in ok]) if ok else 0.0,
                p50_ms=_median([r.p50_ms for r in ok]),
                p99_ms=_median([r.p99_ms for r in ok]),
                requests=sum(r.requests for r in runs),
                errors=sum(r.errors for r in runs),
                failed=not ok,
                note="; ".join(sorted({r.note for r in runs if r.note})),
                cpu_us=_median([r.cpu_us for r in ok]),
                rounds_rps=[r.rps for r in runs],
            )
        )
    return out


def round_ratios(results: list[WrkResult], path: str, other: str, conns: int) -> list[float]:
    """path's req/s over other's, round by round (each round ran both, one after the other)."""
    mine = {r.round: r.rps for r in results if r.path == path and r.conns == conns and r.rps}
    theirs = {r.round: r.rps for r in results if r.path == other and r.conns == conns and r.rps}
    return [mine[k] / theirs[k] for k in sorted(mine) if k in theirs]
