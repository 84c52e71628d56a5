"""Side-by-side gateway benchmark: direct to the simulator, the bare pass-through, Airlock, and LiteLLM's proxy.

Usage:
    python bench/gateway.py [--duration S] [--concurrency 1,8,32] [--skip-litellm]
                            [--stream-requests N] [--warmup S] [--keep-logs] [--output bench/RESULTS.md]

Run it with the project's venv (/work/main/.venv/bin/python). It starts, on 127.0.0.1 only:

* ``airlock sim --output-tokens 8`` (no delays): the upstream for the request/response runs;
* ``airlock sim --output-tokens 1000`` (no delays): the upstream for the streaming runs;
* ``bench/passthrough.py`` in front of each sim: the floor (aiohttp + uvloop, no parsing, no recording);
* ``airlock serve`` with a temporary data dir (recording is always on), one worker;
* LiteLLM's proxy, one worker, from ``bench/.venv-litellm`` (created with ``pip install 'litellm[proxy]'`` when
  missing). Its HTTP(S) proxy variables point at a local sink that refuses and notes every outbound attempt.

For each path and concurrency, ``wrk`` (one thread, ``bench/chat.lua``) POSTs a small non-streaming chat
completion for ``--duration`` seconds; then an aiohttp client measures time to first token of 1,000-token
streams, sequentially, interleaving the paths. The table goes to the terminal and, as markdown, to
``bench/RESULTS.md``. All processes are stopped at the end, also on Ctrl-C or errors.
Only ratios within one run mean anything: the machine is small and shared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LUA = BENCH / "chat.lua"
LITELLM_VENV = BENCH / ".venv-litellm"
AIRLOCK_KEY = "sk-airlock-bench"
LITELLM_KEY = "sk-bench"
DUMMY_KEY = "sk-none"
CHAT_BODY = {"model": "sim-large", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8}
STREAM_TOKENS = 1000
STREAM_BODY = {
    "model": "sim-small",
    "messages": [{"role": "user", "content": "tell me a long story"}],
    "max_tokens": STREAM_TOKENS,
    "stream": True,
}
DIRECT, PASSTHROUGH, AIRLOCK, LITELLM = "direct (sim)", "bare pass-through", "Airlock", "LiteLLM"
# Lines in LiteLLM's log that show it tried to reach something outside this machine.
EGRESS_MARKERS = re.compile(
    r"ConnectError|Name or service not known|Temporary failure in name resolution|fetch attempt|getaddrinfo|ProxyError"
)

console = Console()
if not console.is_terminal:
    console = Console(width=180)
NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class StartError(RuntimeError):
    """A process of the benchmark did not come up."""


# ---------------------------------------------------------------- processes


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


@dataclass
class Procs:
    """Every process the benchmark starts, each in its own process group so it can be stopped whole."""

    logdir: Path
    items: list[Proc] = field(default_factory=list)
    reported: set[str] = field(default_factory=set)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.logdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT, env=env,
                start_new_session=True,
            )  # fmt: skip
        proc = Proc(name, popen, log)
        self.items.append(proc)
        return proc

    def died(self) -> list[str]:
        """A line for each process that exited since the last call, with the end of its log."""
        lines = []
        for proc in self.items:
            code = proc.popen.poll()
            if code is not None and proc.name not in self.reported:
                self.reported.add(proc.name)
                lines.append(f"{proc.name} exited during the run with code {code}; its log ends: {proc.tail(8)}")
        return lines

    def stop_all(self) -> None:
        for proc in reversed(self.items):
            _signal_group(proc.popen, signal.SIGTERM)
        deadline = time.monotonic() + 8
        for proc in reversed(self.items):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            _signal_group(proc.popen, signal.SIGKILL)  # the group may hold workers that outlived their parent
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(2)
        self.items.clear()


def _signal_group(popen: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, sig)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: dict[str, Any] | None = None, key: str | None = None) -> tuple[int, str]:
    """One request with urllib, never through a proxy; returns (status, body text)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with NO_PROXY_OPENER.open(req, timeout=10) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def wait_ready(proc: Proc, url: str, timeout: float, method: str = "GET", body: dict[str, Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise StartError(f"{proc.name} exited with code {proc.popen.returncode}:\n{proc.tail()}")
        with contextlib.suppress(OSError):
            if http(method, url, body)[0] == 200:
                return
        time.sleep(0.25)
    raise StartError(f"{proc.name} not ready after {timeout:.0f} s:\n{proc.tail()}")


# ---------------------------------------------------------------- egress sink


class EgressSink:
    """A local HTTP(S) proxy that refuses every request and remembers what was asked for."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.connection.settimeout(2)
                with contextlib.suppress(OSError):
                    line = self.rfile.readline(4096).decode(errors="replace").strip()
                    sink.attempts.append(line or "(empty request)")
                    self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def env(self) -> dict[str, str]:
        names = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
        env = {n: self.url for n in names} | {n.lower(): self.url for n in names}
        return env | {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------- the systems under test


@dataclass
class Target:
    name: str
    url: str  # the chat completions URL
    key: str
    stream_url: str | None = None
    note: str = ""


@dataclass
class LiteLLMStatus:
    available: bool = False
    reason: str = "skipped (--skip-litellm)"
    version: str = ""
    egress: list[str] = field(default_factory=list)


def start_sim(procs: Procs, name: str, output_tokens: int) -> str:
    port = free_port()
    argv = [airlock_bin(), "sim", "--port", str(port), "--output-tokens", str(output_tokens), "--tokens-per-s", "0"]
    proc = procs.start(name, [*argv, "--ttft-ms", "0"])
    base = f"http://127.0.0.1:{port}/v1"
    wait_ready(proc, base + "/models", 30)
    return base


def start_passthrough(procs: Procs, name: str, upstream: str) -> str:
    port = free_port()
    proc = procs.start(name, [sys.executable, str(BENCH / "passthrough.py"), str(port), upstream])
    base = f"http://127.0.0.1:{port}/v1"
    wait_ready(proc, base + "/chat/completions", 30, "POST", CHAT_BODY)
    return base


def airlock_bin() -> str:
    here = Path(sys.executable).with_name("airlock")
    return str(here) if here.exists() else shutil.which("airlock") or "airlock"


def airlock_config(port: int, data_dir: Path, fast: str, stream: str) -> str:
    digest = hashlib.sha256(AIRLOCK_KEY.encode()).hexdigest()

    def upstream(name: str, url: str, model: str) -> str:
        return (
            f"  - name: {name}\n    base_url: {url}\n    region: local\n    jurisdiction: EU\n"
            f"    deployment: simulator\n    models: [{{name: {model}}}]\n"
        )

    return (
        f"data_dir: {data_dir}\nserver: {{host: 127.0.0.1, port: {port}}}\nupstreams:\n"
        + upstream("sim", fast, "sim-large")
        + upstream("sim-stream", stream, "sim-small")
        + f"api_keys:\n  - tenant: bench\n    key_sha256: {digest}\n"
    )


def start_airlock(procs: Procs, workdir: Path, fast: str, stream: str) -> str:
    port = free_port()
    config = workdir / "airlock.yaml"
    config.write_text(airlock_config(port, workdir / "airlock-data", fast, stream))
    proc = procs.start("airlock", [airlock_bin(), "serve", "-c", str(config)])
    wait_ready(proc, f"http://127.0.0.1:{port}/healthz", 60)
    return f"http://127.0.0.1:{port}/v1"


def ensure_litellm() -> str | None:
    """Create bench/.venv-litellm with litellm[proxy] when missing; returns why it could not, or None."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return None
    console.print("[bold]installing litellm[proxy] into bench/.venv-litellm (one time)...")
    log = BENCH / ".venv-litellm-install.log"
    python = shutil.which("python3") or sys.executable
    steps = [
        [python, "-m", "venv", str(LITELLM_VENV)],
        [str(LITELLM_VENV / "bin" / "pip"), "install", "litellm[proxy]"],
    ]
    with log.open("w") as out:
        for argv in steps:
            try:
                done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=1200, check=False)
            except (OSError, subprocess.TimeoutExpired) as e:
                return f"install failed: {e}"
            if done.returncode != 0:
                last = log.read_text(errors="replace").strip().splitlines()[-1:]
                return f"install failed ({' '.join(argv[-2:])} exited {done.returncode}): {' '.join(last)[:200]}"
    log.unlink(missing_ok=True)
    return None if exe.exists() else "install finished but bench/.venv-litellm/bin/litellm is missing"


def litellm_version() -> str:
    python = LITELLM_VENV / "bin" / "python"
    argv = [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    return "?"


def litellm_config(sim: str) -> str:
    return (
        "model_list:\n  - model_name: sim-large\n    litellm_params:\n      model: openai/sim-large\n"
        f"      api_base: {sim}\n      api_key: sk-dummy-upstream\n"
        "litellm_settings:\n  telemetry: false\n"
        f"general_settings:\n  master_key: {LITELLM_KEY}\n"
    )


def litellm_env(sink: EgressSink) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return (
        env
        | sink.env()
        | {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_MASTER_KEY": LITELLM_KEY,
            "LITELLM_LOG": "WARNING",
            "LITELLM_TELEMETRY": "False",
            "PYTHONUNBUFFERED": "1",
        }
    )


def start_litellm(procs: Procs, workdir: Path, sim: str, sink: EgressSink, status: LiteLLMStatus) -> str | None:
    why = ensure_litellm()
    if why:
        status.reason = why
        return None
    status.version = litellm_version()
    config = workdir / "litellm.yaml"
    config.write_text(litellm_config(sim))
    port = free_port()
    argv = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1"]
    proc = procs.start("litellm", [*argv, "--port", str(port), "--num_workers", "1"], env=litellm_env(sink))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base + "/health/liveliness", 180)
    except StartError as e:
        status.reason = f"did not start: {start_failure(proc)}"
        console.print(f"[red]LiteLLM: {e}")
        return None
    code, text = http("POST", base + "/v1/chat/completions", CHAT_BODY, LITELLM_KEY)
    if code != 200:
        status.reason = f"started, but a test request got HTTP {code}: {text[:160]}"
        return None
    status.available, status.reason = True, "ok"
    return base + "/v1"


def start_failure(proc: Proc) -> str:
    code = proc.popen.poll()
    lines = [line.strip() for line in proc.tail(40).splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"error|exception|refused|invalid", line, re.I)]
    last = (errors or lines or ["(empty log)"])[-1][:200]
    return f"{'exited with code ' + str(code) if code is not None else 'no answer on /health/liveliness'}; log: {last}"


def litellm_egress(procs: Procs, sink: EgressSink) -> list[str]:
    seen = [f"via proxy: {a}" for a in sink.attempts]
    for proc in procs.items:
        if proc.name == "litellm":
            with contextlib.suppress(OSError):
                lines = proc.log.read_text(errors="replace").splitlines()
                seen += [f"in its log: {line.strip()[:200]}" for line in lines if EGRESS_MARKERS.search(line)]
    return seen


# ---------------------------------------------------------------- wrk


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


def run_wrk(url: str, key: str, conns: int, duration: float) -> dict[str, Any]:
    argv = [
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url,
        "--",
        key,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            return dict(json.loads(line[len("BENCHJSON ") :]))
    raise RuntimeError(f"wrk gave no result (exit {done.returncode}): {(done.stderr or done.stdout)[-300:]}")


def measure(target: Target, conns: int, duration: float) -> WrkResult:
    result = WrkResult(target.name, conns, note=target.note)
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
    return result


def note_deaths(procs: Procs, notes: list[str]) -> None:
    for line in procs.died():
        console.print(f"[red]{line}")
        notes.append(line)


def run_throughput(targets: list[Target], args: argparse.Namespace, procs: Procs, notes: list[str]) -> list[WrkResult]:
    for target in targets:
        if args.warmup > 0:
            with contextlib.suppress(RuntimeError, OSError, subprocess.TimeoutExpired):
                run_wrk(target.url, target.key, 8, args.warmup)
    note_deaths(procs, notes)
    results = []
    for conns in args.concurrency:  # paths interleaved per concurrency, so drift on a noisy machine hits all alike
        for target in targets:
            result = measure(target, conns, args.duration)
            console.print(
                f"  c={conns:<3} {target.name:<18} {result.rps:9.0f} req/s  p50 {result.p50_ms:8.2f} ms  "
                f"p99 {result.p99_ms:8.2f} ms  errors {result.errors}"
            )
            results.append(result)
            note_deaths(procs, notes)
            time.sleep(0.3)
    return results


# ---------------------------------------------------------------- streaming


@dataclass
class StreamResult:
    path: str
    first_byte_ms: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    errors: int = 0
    last_error: str = ""


def has_content(line: bytes) -> bool:
    if not line.startswith(b"data: {") or b'"content"' not in line:
        return False
    with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
        return bool(json.loads(line[6:])["choices"][0]["delta"].get("content"))
    return False


async def one_stream(session: aiohttp.ClientSession, target: Target) -> tuple[float, float, float]:
    """(time to the first body line, to the first content token, to the end of the stream), in ms."""
    headers = {"Authorization": f"Bearer {target.key}"}
    t0 = time.perf_counter()
    async with session.post(str(target.stream_url), json=STREAM_BODY, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {(await resp.text())[:160]}")
        first = first_byte = None
        async for line in resp.content:
            first_byte = first_byte or time.perf_counter() - t0
            if has_content(line):
                first = time.perf_counter() - t0
                break
        tail = b""
        async for chunk in resp.content.iter_any():
            tail = (tail + chunk)[-64:]
        total = time.perf_counter() - t0
    if first is None or first_byte is None or b"[DONE]" not in tail:
        raise RuntimeError("stream ended without content or without [DONE]")
    return first_byte * 1000, first * 1000, total * 1000


async def run_streams(targets: list[Target], n: int, warmup: int = 5) -> list[StreamResult]:
    results = {t.name: StreamResult(t.name) for t in targets}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=8)) as session:
        for i in range(warmup + n):
            for target in targets:  # interleaved: one request per path per round
                res = results[target.name]
                try:
                    first_byte, ttft, total = await one_stream(session, target)
                except (aiohttp.ClientError, TimeoutError, RuntimeError) as e:
                    res.errors += 1
                    res.last_error = str(e)[:160]
                    continue
                if i >= warmup:
                    res.first_byte_ms.append(first_byte)
                    res.ttft_ms.append(ttft)
                    res.total_ms.append(total)
    return list(results.values())


# ---------------------------------------------------------------- report


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


def f_ratio(num: float, den: float) -> str:
    return f"{num / den:.2f}×" if num and den else "—"


def by(results: list[WrkResult], path: str, conns: int) -> WrkResult | None:
    return next((r for r in results if r.path == path and r.conns == conns), None)


def throughput_grid(results: list[WrkResult], litellm: LiteLLMStatus) -> Grid:
    head = ["conns", "path", "req/s", "p50 ms", "p99 ms", "+p50 vs direct ms", "non-2xx/errors",
            "Airlock ÷ pass-through", "Airlock ÷ LiteLLM"]  # fmt: skip
    rows = []
    for r in results:
        direct = by(results, DIRECT, r.conns)
        added = r.p50_ms - direct.p50_ms if direct and r.path != DIRECT else float("nan")
        vs_pt = vs_ll = ""
        if r.path == AIRLOCK:
            pt, ll = by(results, PASSTHROUGH, r.conns), by(results, LITELLM, r.conns)
            vs_pt = f_ratio(r.rps, pt.rps) if pt else "—"
            vs_ll = f_ratio(r.rps, ll.rps) if ll else "n/a"
        rps = f"{r.rps:.0f}" if r.requests else "—"
        errors = ("run failed" if r.failed else str(r.errors)) + (f" ({r.note})" if r.note else "")
        rows.append([str(r.conns), r.path, rps, f_ms(r.p50_ms), f_ms(r.p99_ms), f_add(added), errors, vs_pt, vs_ll])
    if not litellm.available:
        rows.append(["all", LITELLM, "unavailable", "—", "—", "—", litellm.reason, "", ""])
    return head, rows


def stream_grid(results: list[StreamResult]) -> Grid:
    head = [
        "path",
        "streams ok",
        "errors",
        "TTFT p50 ms",
        "TTFT p99 ms",
        "+TTFT p50 vs direct ms",
        "first body byte p50 ms",
        "full stream p50 ms",
    ]
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


def ratio_target(results: list[WrkResult], other: str, floor: float, conc: list[int]) -> tuple[str, bool | None]:
    parts, oks = [], []
    for c in conc:
        a, o = by(results, AIRLOCK, c), by(results, other, c)
        if a and o and a.rps and o.rps:
            parts.append(f"c={c}: {a.rps / o.rps:.2f}×")
            oks.append(a.rps / o.rps >= floor)
    return ("; ".join(parts) or "not measured"), (all(oks) if oks else None)


def targets_grid(report: Report) -> Grid:
    res, conc = report.throughput, report.args.concurrency
    pt_text, pt_ok = ratio_target(res, PASSTHROUGH, 2 / 3, conc)
    ll_text, ll_ok = ratio_target(res, LITELLM, 30, conc)
    if not report.litellm.available:
        ll_text = f"LiteLLM unavailable: {report.litellm.reason}"
    a8, d8 = by(res, AIRLOCK, 8), by(res, DIRECT, 8)
    lat = a8.p50_ms - d8.p50_ms if a8 and d8 and a8.requests and d8.requests else float("nan")
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
- **{AIRLOCK}**: `airlock serve`, one worker, bearer-key auth, routing, and the flight recorder on (temporary data dir).
- **{LITELLM}**: LiteLLM's proxy (`litellm --config ... --num_workers 1`) with a master key, model `sim-large` mapped
  to `openai/sim-large` at the sim; `LITELLM_LOCAL_MODEL_COST_MAP=True`, HTTP(S) proxy variables pointing at a local
  sink that refuses and logs any outbound attempt.

Each row: `wrk -t1 -cN -dD` with `bench/chat.lua` POSTing `{json.dumps(CHAT_BODY)}`, after a short warm-up;
paths are interleaved per concurrency. "+p50 vs direct" is the path's p50 minus the direct p50 at the same
concurrency; "non-2xx/errors" counts HTTP status ≥ 400 plus socket errors and timeouts. The streaming rows
are sequential requests (one connection) for a {STREAM_TOKENS}-token SSE stream from a second sim started with
`--output-tokens {STREAM_TOKENS}`, one request per path per round; TTFT is the time from sending the request to
receiving the first SSE event with non-empty `delta.content`; "first body byte" is the time to the first line of
the response body."""


def markdown(report: Report) -> str:
    a = report.args
    machine = "\n".join(f"- {k}: {v}" for k, v in report.machine)
    notes = "\n".join(f"- {' '.join(n.split())}" for n in report.notes) or "- none"
    conc = ",".join(map(str, a.concurrency))
    return f"""# Gateway benchmark

Produced by `python bench/gateway.py --duration {a.duration:g} --concurrency {conc}\
{" --skip-litellm" if a.skip_litellm else ""} --stream-requests {a.stream_requests}`.
Only ratios within one run are meaningful: the machine is small and shared, and wrk, the sim and the
system under test all run on it.

## Machine

{machine}

## Paths

{PATHS_TEXT}

## Targets

{md_table(targets_grid(report))}

## Throughput and latency (non-streaming, {a.duration:g} s per row)

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


# ---------------------------------------------------------------- machine


def read_first(path: str, key: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    return "?"


def git_commit() -> str:
    argv = ["git", "-C", str(ROOT), "describe", "--always", "--dirty"]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    return "?"


def machine_info(litellm: LiteLLMStatus) -> list[tuple[str, str]]:
    mem_kb = read_first("/proc/meminfo", "MemTotal").split()[0]
    mem = f"{int(mem_kb) / 1024 / 1024:.1f} GiB" if mem_kb.isdigit() else "?"
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.splitlines()[:1]
    return [
        ("date", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("nproc", str(len(os.sched_getaffinity(0)))),
        ("CPU", read_first("/proc/cpuinfo", "model name")),
        ("memory", mem),
        ("load average before the runs", " ".join(f"{x:.2f}" for x in os.getloadavg())),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
        ("wrk", " ".join(wrk[0].split()[:2]) if wrk else "?"),
        ("LiteLLM", litellm.version or "not installed"),
        ("Airlock commit", git_commit()),
    ]


def dir_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()] if path.exists() else []
    return len(files), sum(p.stat().st_size for p in files)


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    p.add_argument("--concurrency", default="1,8,32", help="comma list of wrk connection counts (default 1,8,32)")
    p.add_argument("--skip-litellm", action="store_true", help="leave LiteLLM out")
    p.add_argument("--stream-requests", type=int, default=200, help="sequential streams per path (default 200)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of wrk warm-up per path, 0 for none (default 1)")
    p.add_argument("--keep-logs", action="store_true", help="keep the temp dir with every process's log")
    p.add_argument(
        "--output", type=Path, default=BENCH / "RESULTS.md", help="markdown report (default bench/RESULTS.md)"
    )
    args = p.parse_args(argv)
    args.concurrency = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    return args


def start_all(
    procs: Procs, workdir: Path, sink: EgressSink, args: argparse.Namespace
) -> tuple[list[Target], LiteLLMStatus]:
    console.print("[bold]starting sims, pass-throughs, Airlock" + ("" if args.skip_litellm else ", LiteLLM"))
    fast = start_sim(procs, "sim", 8)
    stream = start_sim(procs, "sim-stream", STREAM_TOKENS)
    passthrough = start_passthrough(procs, "passthrough", fast)
    passthrough_stream = start_passthrough(procs, "passthrough-stream", stream)
    airlock = start_airlock(procs, workdir, fast, stream)
    targets = [
        Target(DIRECT, fast + "/chat/completions", DUMMY_KEY, stream + "/chat/completions"),
        Target(PASSTHROUGH, passthrough + "/chat/completions", DUMMY_KEY, passthrough_stream + "/chat/completions"),
        Target(AIRLOCK, airlock + "/chat/completions", AIRLOCK_KEY, airlock + "/chat/completions"),
    ]
    status = LiteLLMStatus()
    if not args.skip_litellm:
        litellm = start_litellm(procs, workdir, fast, sink, status)
        if litellm:
            targets.append(Target(LITELLM, litellm + "/chat/completions", LITELLM_KEY))
    return targets, status


def check_targets(targets: list[Target]) -> list[str]:
    notes = []
    for t in targets:
        code, text = http("POST", t.url, CHAT_BODY, t.key)
        if code != 200:
            t.note = f"test request: HTTP {code}"
            notes.append(f"{t.name}: a test request got HTTP {code}: {text[:160]}")
    return notes


def run(args: argparse.Namespace, procs: Procs, sink: EgressSink, workdir: Path) -> Report:
    targets, litellm = start_all(procs, workdir, sink, args)
    machine = machine_info(litellm)
    notes = check_targets(targets)
    console.print(f"[bold]throughput: {len(targets)} paths × concurrency {args.concurrency}, {args.duration:g} s each")
    throughput = run_throughput(targets, args, procs, notes)
    console.print(f"[bold]streaming: {args.stream_requests} × {STREAM_TOKENS}-token streams per path")
    streams = asyncio.run(run_streams([t for t in targets if t.stream_url], args.stream_requests))
    note_deaths(procs, notes)
    time.sleep(1.5)  # let the recorder flush its last segment
    files, size = dir_size(workdir / "airlock-data")
    notes.append(f"Airlock's data dir held {files} files, {size / 1e6:.1f} MB after the run (recording on).")
    if not args.skip_litellm:
        litellm.egress = litellm_egress(procs, sink)
        notes.append(litellm_note(litellm))
    return Report(machine, throughput, streams, litellm, args, notes)


def litellm_note(status: LiteLLMStatus) -> str:
    head = f"LiteLLM {status.version}: {status.reason}."
    if not status.egress:
        return head + " No outbound attempt seen (proxy sink and log markers)."
    shown = "; ".join(status.egress[:5]) + (f"; … {len(status.egress) - 5} more" if len(status.egress) > 5 else "")
    return head + f" It tried to reach outside: {shown}"


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt so the finally blocks stop every process."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not shutil.which("wrk"):
        console.print("[red]wrk is not installed (apt-get install wrk)")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="airlock-bench-"))
    procs, sink = Procs(workdir), EgressSink()
    t0 = time.monotonic()
    try:
        with stop_on_signals():
            report = run(args, procs, sink, workdir)
    except StartError as e:
        console.print(f"[red]benchmark aborted: {e}")
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; stopping everything")
        return 130
    finally:
        procs.stop_all()
        sink.close()
        if args.keep_logs:
            console.print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report.notes.append(f"Total benchmark time {time.monotonic() - t0:.0f} s.")
    print_report(report)
    args.output.write_text(markdown(report))
    console.print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
