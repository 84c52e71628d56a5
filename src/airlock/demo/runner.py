"""Orchestrating the demo: start two simulated regions and the gateway as real processes on
127.0.0.1, run the agent workload (a region fails half-way), stop everything, and report."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from airlock.cli.render import RecordTable
from airlock.cli.render import console as make_console
from airlock.demo.costs import demo_cost_config, post_demo_costs, print_bill_summary
from airlock.demo.texts import MIX, QUESTIONS
from airlock.demo.workload import TaskResult, ask_support, run_task
from airlock.sampling.demo import DEMO_SAMPLING, sampling_demo
from airlock.store import build_stores
from airlock.store.demo import DemoRecord
from airlock.telemetry.demo import send_instrumented_traffic, show_slices
from airlock.tokens.drift import drift_cells

KEYS = {"acme": "sk-demo-acme", "globex": "sk-demo-globex"}
REVOKED_KEY = "sk-demo-revoked"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115 - the child owns it for its lifetime
    return subprocess.Popen(
        [sys.executable, "-m", "airlock", *args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            args = proc.args if isinstance(proc.args, list | tuple) else [proc.args]
            raise RuntimeError(f"{' '.join(map(str, args))} exited:\n{log.read_text()}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not come up in {timeout}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def write_config(root: Path, eu_port: int, us_port: int, gw_port: int, candidate_port: int) -> Path:
    def upstream(tokenizer: str) -> dict[str, Any]:
        return {
            "deployment": "simulator",
            "models": [
                {
                    "name": "sim-large",
                    "tokenizer": tokenizer,
                    "context_window": 8192,
                    "prices": [{"input_per_mtok": 0.50, "output_per_mtok": 1.50, "cached_read_per_mtok": 0.25}],
                },
                {"name": "sim-small", "tokenizer": "cl100k_base"},
            ],
        }

    cfg = {
        "data_dir": "data",
        "node": {"name": "airlock-demo-1", "region": "eu-west-1", "jurisdiction": "EU"},
        "server": {"host": "127.0.0.1", "port": gw_port},
        "recorder": {"segment_max_age_s": 0.5},
        "upstreams": [
            {
                "name": "sim-eu",
                "base_url": f"http://127.0.0.1:{eu_port}/v1",
                "region": "eu-west-1",
                "jurisdiction": "EU",
                **upstream("cl100k_base"),
            },
            {
                "name": "sim-us",
                "base_url": f"http://127.0.0.1:{us_port}/v1",
                "region": "us-east-1",
                "jurisdiction": "US",
                **upstream("o200k_base"),  # wrong: the model there bills with cl100k_base
            },
            {  # a candidate model to replay yesterday's traffic against: it answers differently
                "name": "sim-candidate",
                "base_url": f"http://127.0.0.1:{candidate_port}/v1",
                "region": "eu-west-1",
                "jurisdiction": "EU",
                "deployment": "simulator",
                "models": [
                    {
                        "name": "candidate-large",
                        "upstream_model": "sim-large",
                        "tokenizer": "cl100k_base",
                        "prices": [{"input_per_mtok": 0.15, "output_per_mtok": 0.60}],
                    }
                ],
            },
        ],
        "replay": {"judge": "sim-small"},  # the judge is a local model, never a hosted one
        "sampling": DEMO_SAMPLING,
        "routes": [
            {
                "alias": "agent-default",
                "targets": [{"upstream": "sim-eu", "model": "sim-large"}, {"upstream": "sim-us", "model": "sim-large"}],
            }
        ],
        "api_keys": [{"tenant": t, "key_sha256": hashlib.sha256(k.encode()).hexdigest()} for t, k in KEYS.items()],
        **demo_cost_config(),  # prices beyond tokens, revenue per task, energy profiles
    }
    path = root / "airlock.yaml"
    path.write_text("# Written by `airlock demo`.\n" + yaml.safe_dump(cfg, sort_keys=False))
    return path


def _abandon_stream(base_url: str) -> TaskResult:
    """An agent that gives up on a stream after its first chunk: the gateway cancels the upstream call."""
    client = openai.OpenAI(base_url=base_url, api_key=KEYS["acme"], max_retries=0)
    result = TaskResult(
        "task-abandoned", "", "acme", "support", steps=1, outcome="cancelled", detail="client gave up mid-stream"
    )
    stream = client.chat.completions.create(
        model="agent-default",
        stream=True,
        max_tokens=400,
        extra_headers={"x-airlock-task": result.task_id},
        messages=[{"role": "user", "content": "Write the full refund policy, every clause."}],
    )
    next(iter(stream))
    stream.response.close()
    client.close()
    return result


def _failing(base_url: str, kind: str, n: int) -> TaskResult:
    if kind == "revoked-key":
        return run_task(base_url, REVOKED_KEY, "unknown", n, stream=False)
    return run_task(base_url, KEYS["globex"], "globex", n, stream=False, model="gpt-4o")  # not routed here


def run_workload(base_url: str, tasks: int, eu_url: str, console: Console) -> list[TaskResult]:
    plan: list[tuple[str, int]] = [("agent", n) for n in range(tasks)]
    plan.insert(tasks // 3, ("revoked-key", 900))
    plan.insert(2 * tasks // 3, ("unrouted-model", 901))
    results: list[TaskResult] = []
    half = len(plan) // 2
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        console=console,
    ) as progress:
        bar = progress.add_task("agent tasks", total=len(plan) + 1, note="")
        with ThreadPoolExecutor(max_workers=4) as pool:
            for phase, part in enumerate((plan[:half], plan[half:])):
                if phase == 1:
                    httpx.post(f"{eu_url}/sim/profile", json={"error_rate": 1.0, "error_kinds": ["503"]})
                    progress.update(bar, note="[yellow]eu-west-1 is failing: traffic fails over to us-east-1")
                futures = []
                for kind, n in part:
                    if kind == "agent":
                        tenant = "acme" if n % 2 == 0 else "globex"
                        futures.append(pool.submit(run_task, base_url, KEYS[tenant], tenant, n, n % 3 == 1))
                    else:
                        futures.append(pool.submit(_failing, base_url, kind, n))
                for f in futures:
                    results.append(f.result())
                    progress.advance(bar)
        results.append(_abandon_stream(base_url))
        progress.advance(bar)
        questions = [(loc, QUESTIONS[loc][i % len(QUESTIONS[loc])]) for loc, k in MIX.items() for i in range(k)]
        support = progress.add_task("support questions", total=len(questions), note="seven languages")
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = [
                pool.submit(ask_support, base_url, KEYS["acme"], loc, text, i)
                for i, (loc, text) in enumerate(questions)
            ]
            for answer in answers:
                answer.result()
                progress.advance(support)
    return results


def _wait_recorded(reader: DemoRecord, expected: int, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        n = reader.spans_recorded()
        if n >= expected:
            break
        time.sleep(0.1)
    return n


def report(console: Console, reader: DemoRecord, results: list[TaskResult], data: Path, cli: str) -> None:
    ok = sum(r.outcome == "ok" for r in results)
    console.print(
        f"\n[bold]{len(results)} agent tasks[/bold]: {ok} completed, {len(results) - ok} failed or "
        f"abandoned; {sum(r.steps for r in results)} model calls, {sum(r.tool_calls for r in results)} "
        "tool results fed back."
    )
    rows = reader.calls_by_region()
    t = RecordTable(title="The record, by the region that answered")
    for col in (
        "region",
        "calls",
        "ok",
        "errors",
        "cancelled",
        "failed over",
        "tokens in",
        "cached",
        "tokens out",
        "p50",
        "p95",
    ):
        t.add_column(col, justify="left" if col == "region" else "right")
    for region in rows:
        t.add_row(
            region.region,
            str(region.calls),
            str(region.ok),
            str(region.errors),
            str(region.cancelled),
            str(region.failed_over),
            str(region.tokens_in),
            str(region.cached),
            str(region.tokens_out),
            f"{region.p50_ms or 0:.1f} ms",
            f"{region.p95_ms or 0:.1f} ms",
        )
    console.print(t)
    hops = reader.hop_outcomes()
    console.print("hops: " + ", ".join(f"{h.upstream} {h.outcome} x{h.hops}" for h in hops))
    failed = [r for r in results if r.outcome != "ok"]
    if failed:
        ft = RecordTable(title="Tasks that did not complete")
        for col in ("task", "tenant", "outcome", "why"):
            ft.add_column(col)
        for r in failed:
            ft.add_row(r.task_id, r.tenant, r.outcome, r.detail)
        console.print(ft)
    drift = [c for c in drift_cells(reader, ["model", "script", "upstream"]) if c.key["upstream"] != "None"]
    dt = RecordTable(title="Token drift: provider-billed / locally counted - 1 (input tokens)")
    for col in ("model", "script", "upstream", "n", "p50", "p95", "margin applied", "flag"):
        dt.add_column(col, justify="right" if col in ("n", "p50", "p95", "margin applied") else "left")
    for c in drift[:8]:
        margin = f"{c.margin:+.1%}" if c.margin is not None else "default +10% (n<59)"
        dt.add_row(
            c.key["model"],
            c.key["script"],
            c.key["upstream"],
            str(c.n),
            f"{c.p50:+.1%}",
            f"{c.p95:+.1%}",
            margin,
            "[bold red]" + "; ".join(c.flags) if c.flags else "",
        )
    console.print(dt)
    sample = next((r for r in results if r.outcome == "ok" and r.tool_calls), results[0])
    print_bill_summary(console, data.parent / "airlock.yaml")
    d = f"-d {data}"
    console.print("\n[bold]Explore the record[/bold]")
    console.print(f"  {cli} traces list {d}")
    console.print(f"  {cli} traces list {d} --status error")
    console.print(f"  {cli} traces list {d} --attr locale=ja-JP --attr feature=scheduling")
    console.print(f"  {cli} traces show {d} {sample.trace_id[:12]}      # a task as a tree: hops, exact bytes")
    digest = reader.upstream_request_digest(sample.trace_id)
    if digest:
        console.print(f"  {cli} blob {d} {digest[:16]}         # the exact bytes sent upstream")
    console.print(f"  {cli} tokens drift {d} --by model,script,upstream")
    console.print(f"  {cli} cost report {d} --by tenant,feature --forecast-tasks 100000   # the full bill per task")
    console.print(f"  {cli} cost task {d} {sample.task_id}      # one task's line items: inference is only part")
    console.print(f"  {cli} energy report {d} --by model_tier,batch_bucket,cache,tenant,task_type")
    console.print(f"  {cli} status {d} --all")


def replay_demo(console: Console, config_path: Path, data: Path, cli: str) -> None:
    """Replay the agent tasks against the candidate model and show how it compares."""
    import asyncio

    from airlock.config import load_config
    from airlock.replay.report import build_report, summary_rows
    from airlock.replay.runner import ReplayRunner
    from airlock.store import build_stores
    from airlock.store.interface import TraceFilter

    config = load_config(config_path)
    stores = build_stores(config)
    runner = ReplayRunner(config, "demo-candidate", "candidate-large", stores=stores)
    pending = runner.prepare(TraceFilter(status="ok", limit=1000))
    console.print(
        f"\n[bold]Replay[/bold]: {len(pending)} recorded traces against candidate-large "
        "(recorded tool results are returned; no tool is called) ..."
    )
    asyncio.run(runner.run(pending))
    table = RecordTable(title="Replay demo-candidate: candidate-large against what was recorded")
    table.add_column("measure")
    table.add_column("value")
    for k, v in summary_rows(build_report(stores, "demo-candidate")):
        table.add_row(k, v)
    console.print(table)
    console.print(f"  {cli} replay check {' '.join(['-d', str(data)])}")
    console.print(f"  {cli} replay report -d {data} demo-candidate --html replay.html")


def run_demo(root: Path, tasks: int = 24) -> int:
    console = make_console()
    root = root.resolve()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    eu_port, us_port, gw_port, candidate_port = _free_port(), _free_port(), _free_port(), _free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        console.print(
            "[bold]Airlock demo[/bold]: two simulated regions (eu-west-1, us-east-1), one gateway, "
            f"{tasks} agent tasks. Everything runs on 127.0.0.1."
        )
        sim_args = ["--ttft-ms", "15", "--tokens-per-s", "800", "--output-tokens", "40"]
        # Both simulated models bill with cl100k_base, but the config maps us-east-1's to o200k_base: a wrong
        # mapping that undercounts non-Latin text, which the drift report makes stand out.
        for port, region, tokenizer in ((eu_port, "eu-west-1", "cl100k_base"), (us_port, "us-east-1", "cl100k_base")):
            log = root / f"sim-{region}.log"
            args = ["sim", "--port", str(port), "--region", region, "--tokenizer", tokenizer, *sim_args]
            procs.append(_start(args, log))
            _wait(f"http://127.0.0.1:{port}/v1/models", procs[-1], log)
        log = root / "sim-candidate.log"  # the candidate: terse, and it answers without calling tools
        procs.append(
            _start(
                [
                    "sim",
                    "--port",
                    str(candidate_port),
                    "--region",
                    "candidate",
                    "--style",
                    "terse",
                    "--no-tools",
                    *sim_args,
                ],
                log,
            )
        )
        _wait(f"http://127.0.0.1:{candidate_port}/v1/models", procs[-1], log)
        config = write_config(root, eu_port, us_port, gw_port, candidate_port)
        gw_log = root / "gateway.log"
        gateway = _start(["serve", "-c", str(config)], gw_log)
        procs.append(gateway)
        _wait(f"http://127.0.0.1:{gw_port}/healthz", gateway, gw_log)
        console.print(f"gateway on http://127.0.0.1:{gw_port}/v1, config {config}")
        results = run_workload(f"http://127.0.0.1:{gw_port}/v1", tasks, f"http://127.0.0.1:{eu_port}", console)
        post_demo_costs(f"http://127.0.0.1:{gw_port}/v1", KEYS, results, console)
        otel = send_instrumented_traffic(f"http://127.0.0.1:{gw_port}/v1", KEYS["acme"])  # OTLP in, a planted slice
        console.print(f"support-bot (OpenTelemetry SDK): {otel.traces} traces, {otel.spans} spans sent over OTLP")
        expected = sum(max(r.steps, 1) for r in results) + sum(MIX.values()) + otel.traces + otel.spans
        from airlock.config import load_config

        stores = build_stores(load_config(config))
        reader = stores.demo
        _wait_recorded(reader, expected)
        _stop(gateway)  # a clean stop flushes the last segment
        venv_cli = Path(sys.executable).parent / "airlock"
        cli = os.path.relpath(venv_cli) if venv_cli.exists() else "airlock"
        report(console, reader, results, Path(os.path.relpath(root / "data")), cli)
        show_slices(
            console, stores.slices, reader, root / "data", cli
        )  # before sampling: the finder reads the whole record
        sampling_demo(console, config, cli)
        replay_demo(console, config, Path(os.path.relpath(root / "data")), cli)
        return 0
    finally:
        for p in reversed(procs):
            _stop(p)
