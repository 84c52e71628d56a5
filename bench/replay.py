"""Replay benchmark: record a mix of single-turn and tool-using traces through the gateway, then replay
1,000 recorded requests against the simulated upstream, and compare with sending the same request
bodies to it directly. Prints requests per second and the overhead per request.

    python bench/replay.py [--requests 1000] [--concurrency 8] [--output bench/RESULTS-replay.md]

Everything runs on 127.0.0.1: two simulators (the original and a candidate), and the gateway."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
import orjson
import yaml
from rich.console import Console

from airlock.config import load_config
from airlock.record.ids import new_span_id, new_trace_id
from airlock.replay.runner import ReplayRunner
from airlock.store.embedded import BlobReader, DataDir, DuckDBSpanReader
from airlock.store.interface import TraceFilter

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-bench-replay"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search_tickets",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "airlock", *args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait(url: str) -> None:
    for _ in range(300):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(url)


def record(gw: str, requests: int) -> None:
    """About a third single-turn questions, the rest two-turn tool-using tasks (two requests each)."""
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(timeout=30) as c:
        sent = i = 0
        while sent < requests:
            if i % 3 == 0:
                c.post(
                    f"{gw}/chat/completions",
                    headers=auth,
                    json={"model": "chat", "messages": [{"role": "user", "content": f"question {i}"}]},
                )
                sent += 1
            else:
                h = {**auth, "traceparent": f"00-{new_trace_id()}-{new_span_id()}-01"}
                msgs = [{"role": "user", "content": f"find tickets about refunds, batch {i}"}]
                first = c.post(
                    f"{gw}/chat/completions", headers=h, json={"model": "chat", "tools": TOOLS, "messages": msgs}
                ).json()
                call = first["choices"][0]["message"]["tool_calls"][0]
                msgs += [
                    first["choices"][0]["message"],
                    {"role": "tool", "tool_call_id": call["id"], "content": '{"tickets": [4182]}'},
                ]
                c.post(f"{gw}/chat/completions", headers=h, json={"model": "chat", "tools": TOOLS, "messages": msgs})
                sent += 2
            i += 1


async def direct(url: str, bodies: list[bytes], concurrency: int) -> float:
    limit = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as s:

        async def one(b: bytes) -> None:
            async with limit, s.post(url, data=b, headers={"Content-Type": "application/json"}) as r:
                await r.read()

        start = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--output", type=Path, default=ROOT / "bench" / "RESULTS-replay.md")
    args = ap.parse_args()
    console = Console(width=140)
    tmp = Path(tempfile.mkdtemp(prefix="airlock-bench-replay-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ports = {n: free_port() for n in ("orig", "cand", "gw")}
        procs.append(start(["sim", "--port", str(ports["orig"]), "--region", "orig"], tmp / "orig.log"))
        procs.append(
            start(["sim", "--port", str(ports["cand"]), "--region", "cand", "--style", "terse"], tmp / "cand.log")
        )
        for n in ("orig", "cand"):
            wait(f"http://127.0.0.1:{ports[n]}/v1/models")
        cfg = {
            "data_dir": str(tmp / "data"),
            "server": {"port": ports["gw"]},
            "upstreams": [
                {
                    "name": "orig",
                    "base_url": f"http://127.0.0.1:{ports['orig']}/v1",
                    "region": "a",
                    "jurisdiction": "EU",
                    "deployment": "simulator",
                    "models": [{"name": "sim-large"}],
                },
                {
                    "name": "cand",
                    "base_url": f"http://127.0.0.1:{ports['cand']}/v1",
                    "region": "b",
                    "jurisdiction": "EU",
                    "deployment": "simulator",
                    "models": [{"name": "cand-large", "upstream_model": "sim-large"}],
                },
            ],
            "routes": [{"alias": "chat", "targets": [{"upstream": "orig", "model": "sim-large"}]}],
            "api_keys": [{"tenant": "bench", "key_sha256": hashlib.sha256(KEY.encode()).hexdigest()}],
        }
        path = tmp / "airlock.yaml"
        path.write_text(yaml.safe_dump(cfg))
        gw = start(["serve", "-c", str(path)], tmp / "gw.log")
        procs.append(gw)
        wait(f"http://127.0.0.1:{ports['gw']}/healthz")
        console.print(f"recording {args.requests} requests ...")
        record(f"http://127.0.0.1:{ports['gw']}/v1", args.requests)
        os.killpg(gw.pid, signal.SIGTERM)
        gw.wait(30)
        data = DataDir.at(tmp / "data")
        spans = DuckDBSpanReader(data).sql('SELECT "airlock.payload.upstream_request" AS d FROM spans')
        found = BlobReader(data).get_many([s["d"] for s in spans])
        bodies = []
        for s in spans:
            doc = orjson.loads(found[s["d"]])
            doc["model"] = "sim-large"
            bodies.append(orjson.dumps(doc))
        config = load_config(path)
        runner = ReplayRunner(config, "bench", "cand-large", concurrency=args.concurrency)
        pending = runner.prepare(TraceFilter(limit=10**9))
        console.print(f"replaying {len(spans)} requests in {len(pending)} traces ...")
        t0 = time.perf_counter()
        progress = asyncio.run(runner.run(pending))
        replay_s = time.perf_counter() - t0
        direct_s = asyncio.run(
            direct(f"http://127.0.0.1:{ports['cand']}/v1/chat/completions", bodies, args.concurrency)
        )
        n = len(spans)
        rows = [
            ("replay (through Airlock, recorded)", n / replay_s, replay_s / n * 1000),
            ("the same bodies sent directly", n / direct_s, direct_s / n * 1000),
        ]
        overhead = (replay_s - direct_s) / n * 1000
        console.print(f"{'path':<40}{'req/s':>10}{'ms/request':>14}")
        for name, rps, ms in rows:
            console.print(f"{name:<40}{rps:>10.0f}{ms:>14.2f}")
        console.print(
            f"overhead per request: {overhead:.2f} ms; traces done {progress.done}, diverged "
            f"{progress.diverged}, failed {progress.failed}"
        )
        md = [
            "# Replay benchmark",
            "",
            f"`python bench/replay.py --requests {args.requests} --concurrency {args.concurrency}` on "
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores, "
            f"Python {platform.python_version()}.",
            "",
            f"{n} recorded requests ({len(pending)} traces: a third single-turn, the rest two-turn tool-using "
            "tasks) replayed against a second simulator that answers differently, turn by turn, at concurrency "
            f"{args.concurrency}; then the same request bodies sent straight to that simulator.",
            "",
            "| path | req/s | ms per request |",
            "|---|---|---|",
            *[f"| {name} | {rps:.0f} | {ms:.2f} |" for name, rps, ms in rows],
            "",
            f"Overhead of replaying (fidelity check, turn logic, the gateway, recording the replay, saving "
            f"progress): {overhead:.2f} ms per request. Traces done {progress.done}, diverged {progress.diverged}, "
            f"failed {progress.failed}.",
            "",
        ]
        args.output.write_text("\n".join(md))
        console.print(f"wrote {args.output}")
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
