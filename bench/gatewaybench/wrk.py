"""Non-streaming throughput and latency: wrk with bench/chat.lua, and its BENCHJSON line parsed."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
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


def measure(target: Target, conns: int, duration: float) -> WrkResult:
    result = WrkResult(target.name, conns, note=target.note)
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
    targets: list[Target], concurrency: list[int], duration: float, warmup: float, procs: Procs, notes: list[str]
) -> list[WrkResult]:
    for target in targets:
        if warmup > 0:
            with contextlib.suppress(RuntimeError, OSError, subprocess.TimeoutExpired):
                run_wrk(target.url, target.key, 8, warmup)
    procs.note_deaths(notes)
    results = []
    for conns in concurrency:  # paths interleaved per concurrency, so drift on a noisy machine hits all alike
        for target in targets:
            result = measure(target, conns, duration)
            console.print(
                f"  c={conns:<3} {target.name:<18} {result.rps:9.0f} req/s  p50 {result.p50_ms:8.2f} ms  "
                f"p99 {result.p99_ms:8.2f} ms  errors {result.errors}  cpu {result.cpu_us:6.0f} us/req"
            )
            results.append(result)
            procs.note_deaths(notes)
            time.sleep(0.3)
    return results
