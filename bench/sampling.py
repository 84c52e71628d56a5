"""Tail-sampling benchmark: sampler decisions per second and peak memory (the pure core, and under one
trace of 100,000 spans), the whole pass over a data directory (Parquet read, decide, write), and what
sampling adds to a compaction (the retention lookup).

    python bench/sampling.py [--traces N] [--output bench/RESULTS-sampling.md]

Prints a table and writes it as markdown. Single process, CPU only; the machine is shared and noisy,
so each figure is the best of three runs."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import random
import shutil
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from airlock.config.schema import Config, Sampling
from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.sampling import Sampler, SpanFacts
from airlock.sampling.retention import SampledRetention
from airlock.sampling.stage import SamplingPass
from airlock.store.embedded import DataDir, DuckDBSpanReader, ParquetSegments
from airlock.store.embedded.segments import live_segments

ROOT = Path(__file__).resolve().parent.parent
SEC = 10**9
T0 = 1_700_000_000 * SEC


def traffic(n_traces: int, seed: int = 1) -> list[list[SpanFacts]]:
    """Traces of 1-5 spans over 50 keys (Zipf-like), 2% errors, spread over one hour of trace time."""
    rng = random.Random(seed)
    keys = [f"tenant-{i}|model-{i % 3}" for i in range(50)]
    weights = [1 / (i + 1) for i in range(50)]
    out = []
    for n in range(n_traces):
        key = rng.choices(keys, weights)[0]
        tid = f"{rng.getrandbits(128):032x}"
        t = T0 + n * 3600 * SEC // n_traces
        spans = rng.randint(1, 5)
        status = "error" if rng.random() < 0.02 else "ok"
        out.append(
            [
                SpanFacts(
                    tid,
                    i == spans - 1,
                    t,
                    t + rng.randint(5, 900) * 10**6,
                    status if i == 0 else "ok",
                    key,
                    f"{key}|locale={rng.choice('abcdefgh')}",
                    200,
                    50,
                    0.0004,
                )
                for i in range(spans)
            ]
        )
    return out


def run_core(traces: list[list[SpanFacts]], pass_every: int = 2000) -> Sampler:
    sampler = Sampler(Sampling(enabled=True, span_budget_per_hour=20_000))
    for n, trace in enumerate(traces):
        for s in trace:
            sampler.add(s, s.end_ns)
        if n % pass_every == pass_every - 1:
            sampler.decide(trace[-1].end_ns)
    sampler.decide(T0 + 7200 * SEC, flush=True)
    return sampler


def giant(n_spans: int = 100_000) -> Sampler:
    sampler = Sampler(Sampling(enabled=True))
    for i in range(n_spans):
        sampler.add(SpanFacts("giant", False, T0 + i, T0 + i + 10**6, "ok", "k", "k"), T0 + i)
        if i % 2000 == 1999:
            sampler.decide(T0 + i)
    sampler.decide(T0 + n_spans, flush=True)
    return sampler


def best(fn: Callable[[], Any], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def peak_bytes(fn: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def config(root: Path) -> Config:
    return Config.model_validate(
        {
            "data_dir": str(root),
            "upstreams": [
                {
                    "name": "up",
                    "base_url": "http://127.0.0.1:9/v1",
                    "region": "r",
                    "jurisdiction": "EU",
                    "models": [{"name": "m", "prices": [{"input_per_mtok": 1.0, "output_per_mtok": 2.0}]}],
                }
            ],
            "api_keys": [{"tenant": "t", "key_env": "K"}],
            "sampling": {"enabled": True, "span_budget_per_hour": 20_000, "decision_wait_s": 5},
        }
    )


def write_record(data: DataDir, traces: list[list[SpanFacts]], per_segment: int = 1000) -> int:
    segments = ParquetSegments(data)
    rows: list[dict[str, Any]] = []
    seq = 0
    for trace in traces:
        for i, s in enumerate(trace):
            tenant, model = s.key.split("|")
            rows.append(
                {
                    "trace_id": s.trace_id,
                    "span_id": f"{i:016x}",
                    "parent_span_id": None if s.is_root else "p",
                    "start_ns": s.start_ns,
                    "end_ns": s.end_ns,
                    "status": s.status,
                    "airlock.tenant": tenant,
                    "gen_ai.request.model": model,
                    "airlock.upstream": "up",
                    "gen_ai.usage.input_tokens": 200,
                    "gen_ai.usage.output_tokens": 50,
                    "attributes": {"locale": s.signature[-1]},
                }
            )
        if len(rows) >= per_segment:
            segments.write("w1", seq, pa.Table.from_pylist(rows, schema=SPAN_SCHEMA), HOP_SCHEMA.empty_table())
            rows, seq = [], seq + 1
    if rows:
        segments.write("w1", seq, pa.Table.from_pylist(rows, schema=SPAN_SCHEMA), HOP_SCHEMA.empty_table())
        seq += 1
    return seq


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--traces", type=int, default=100_000)
    ap.add_argument("--output", default=str(ROOT / "bench" / "RESULTS-sampling.md"))
    args = ap.parse_args()
    traces = traffic(args.traces)
    n_spans = sum(len(t) for t in traces)
    rows: list[tuple[str, str, str]] = []

    core_s = best(lambda: run_core(traces))
    sampler = run_core(traces)
    rows.append(
        (
            "sampler core: feed + decide",
            f"{args.traces / core_s:,.0f} traces/s ({n_spans / core_s:,.0f} spans/s)",
            f"{args.traces:,} traces, {n_spans:,} spans, 50 keys, a pass every 2,000 traces",
        )
    )
    rows.append(
        (
            "sampler core: peak memory",
            f"{peak_bytes(lambda: run_core(traces[:20_000])) / 1e6:.1f} MB",
            "tracemalloc, 20,000 traces; waiting traces + decided memory + sketches",
        )
    )

    def waiting() -> Sampler:  # the configured worst case: max_pending_traces traces, none complete
        s = Sampler(Sampling(enabled=True, decision_wait_s=1e9))
        for trace in traces[:100_000]:
            s.add(dataclasses.replace(trace[0], is_root=False), trace[0].end_ns)
        return s

    rows.append(
        (
            "100,000 traces waiting (the default bound)",
            f"{peak_bytes(waiting) / 1e6:.1f} MB",
            "tracemalloc; one constant-size aggregate per waiting trace",
        )
    )
    g_s = best(lambda: giant())
    rows.append(
        (
            "one trace of 100,000 spans",
            f"{100_000 / g_s:,.0f} spans/s",
            "decided early at max_spans_per_trace (10,000), the rest late additions",
        )
    )
    rows.append(("  its peak memory", f"{peak_bytes(giant) / 1e3:.0f} kB", "tracemalloc; constant in the trace's size"))
    stats = sampler.rates.keys
    low = min(s.probability for s in stats.values())
    rows.append(
        (
            "rates reached",
            f"1/{1 / low:,.0f} .. 1",
            "busiest key .. quietest, budget 20,000 spans/hour (varies run to run: KLL is randomized, "
            "so the p99 'slow' keeps, and the budget left after them, vary a little)",
        )
    )

    tmp = Path(tempfile.mkdtemp(prefix="airlock-bench-sampling-"))
    try:
        data = DataDir.at(tmp)
        data.create()
        n_segments = write_record(data, traces)
        fresh = Path(tempfile.mkdtemp(prefix="airlock-bench-pass-"))
        pass_runs = []
        for _ in range(3):  # each on a fresh copy: a pass changes the directory
            shutil.rmtree(fresh)
            shutil.copytree(tmp, fresh)
            t = time.perf_counter()
            SamplingPass(config(fresh), DataDir.at(fresh)).run_until_caught_up(now_ns=T0 + 7200 * SEC, flush=True)
            pass_runs.append(time.perf_counter() - t)
        shutil.rmtree(fresh)
        t = time.perf_counter()
        results = SamplingPass(config(tmp), data).run_until_caught_up(now_ns=T0 + 7200 * SEC, flush=True)
        pass_s = min([*pass_runs, time.perf_counter() - t])
        spans_read = sum(r.spans_read for r in results)
        decided = sum(r.decided for r in results)
        rows.append(
            (
                "whole pass over a data directory",
                f"{spans_read / pass_s:,.0f} spans/s",
                f"{spans_read:,} spans in {n_segments} Parquet segments -> {decided:,} decisions, {pass_s:.2f} s",
            )
        )
        work = Path(tempfile.mkdtemp(prefix="airlock-bench-compact-"))
        timings: dict[str, float] = {}
        for name in ("plain", "with sampling"):
            runs = []
            for _ in range(3):
                shutil.rmtree(work)
                shutil.copytree(tmp, work)
                copy = DataDir.at(work)
                seg = ParquetSegments(copy, SampledRetention(copy) if name == "with sampling" else None)
                t = time.perf_counter()
                merged = seg.compact("w1", 16)
                runs.append(time.perf_counter() - t)
            timings[name] = min(runs)
        kept_spans = DuckDBSpanReader(DataDir.at(work)).sql("SELECT count(*) AS n FROM spans")[0]["n"]
        shutil.rmtree(work)
        spans_table = pa.concat_tables([pq.read_table(s.path) for s in live_segments(data.spans)])
        retention = SampledRetention(data)
        lookup_s = best(lambda: retention.retain(spans_table, HOP_SCHEMA.empty_table()))
        rows.append(
            (
                "compaction: merge every segment",
                f"{timings['plain'] * 1e3:,.0f} ms plain, {timings['with sampling'] * 1e3:,.0f} ms with sampling",
                f"{merged} segments, {spans_read:,} spans in; with sampling {kept_spans:,} spans out",
            )
        )
        rows.append(
            (
                "  of which the retention step",
                f"{lookup_s * 1e3:,.0f} ms",
                f"decision lookup (DuckDB over {decided:,} decisions), filter, stamp",
            )
        )
    finally:
        shutil.rmtree(tmp)

    table = Table(title="tail sampling")
    for col in ("measure", "result", "what"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    Console().print(table)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Tail sampling benchmark",
        "",
        f"`python bench/sampling.py --traces {args.traces}` on {when}; {os.cpu_count()} cores (shared, noisy), "
        f"{platform.machine()}, Python {platform.python_version()}. Best of three runs for each speed.",
        "",
        "| measure | result | what |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
    ]
    Path(args.output).write_text("\n".join(lines))


if __name__ == "__main__":
    main()
