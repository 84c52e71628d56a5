"""Tokenizer benchmark: tokens counted per second by each bundled tokenizer on multilingual text, and
the latency counting adds to a typical chat request (what the recorder spends per record, and what the
pre-flight check spends on the request path).

    python bench/tokens.py [--seconds S] [--output bench/RESULTS-tokens.md]

Prints a table and writes it as markdown. Single process, CPU only; absolute numbers depend on the
machine, so compare tokenizers with each other within one run."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import time
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from airlock.config import parse_config
from airlock.demo.texts import QUESTIONS
from airlock.tokens import available, get_tokenizer
from airlock.tokens.chat import count_request
from airlock.tokens.preflight import Preflight

ROOT = Path(__file__).resolve().parent.parent


def corpus() -> str:
    text = "\n".join(q for qs in QUESTIONS.values() for q in qs)
    return (text + "\n") * max(1, 200_000 // len(text))  # about 200k characters, seven scripts


def typical_request() -> dict:
    """A chat an agent sends: a system prompt, a few turns, a tool result, one tool definition (~2 kB)."""
    turns = [
        {
            "role": "system",
            "content": "You are the support agent. Answer briefly, cite the ticket, never "
            "promise refunds above the policy limit. " * 3,
        }
    ]
    for i, (_, qs) in enumerate(QUESTIONS.items()):
        turns.append({"role": "user" if i % 2 == 0 else "assistant", "content": qs[0]})
    turns.append(
        {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": orjson.dumps(
                {"tickets": [{"id": 4182, "title": "Refund not received", "status": "open"}] * 3}
            ).decode(),
        }
    )
    tools = [
        {
            "type": "function",
            "function": {
                "name": "search_tickets",
                "description": "Search tickets.",
                "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
            },
        }
    ]
    return {"model": "m", "messages": turns, "tools": tools, "max_tokens": 256}


def throughput(name: str, text: str, seconds: float) -> tuple[float, float, int]:
    tok = get_tokenizer(name)
    n_tokens = tok.count(text)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        tok.count(text)
        runs += 1
    elapsed = time.perf_counter() - start
    return n_tokens * runs / elapsed, len(text.encode()) * runs / elapsed / 1e6, n_tokens


def request_latency(name: str, body: dict, seconds: float) -> tuple[float, float]:
    tok = get_tokenizer(name)
    samples = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(samples) < 200:
        t = time.perf_counter()
        count_request(tok, body)
        samples.append((time.perf_counter() - t) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)]


def preflight_fast_path(body: dict, seconds: float) -> float:
    cfg = parse_config(
        "upstreams: [{name: u, base_url: 'http://127.0.0.1:9/v1', region: r, jurisdiction: EU,"
        " models: [{name: m, tokenizer: cl100k_base, context_window: 131072}]}]\n"
        "api_keys: [{tenant: t, key_env: K}]\n"
    )
    pf, spec, size = Preflight(cfg), cfg.upstreams[0].models[0], len(orjson.dumps(body))
    samples = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(samples) < 1000:
        t = time.perf_counter()
        assert not pf.may_exceed(spec, "m", body, size)
        samples.append((time.perf_counter() - t) * 1e6)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="per measurement (default 1)")
    ap.add_argument("--output", type=Path, default=ROOT / "bench" / "RESULTS-tokens.md")
    args = ap.parse_args()
    text, body = corpus(), typical_request()
    body_bytes = len(orjson.dumps(body))
    rows = []
    for name in available():
        tps, mbps, n = throughput(name, text, args.seconds)
        p50, p99 = request_latency(name, body, args.seconds)
        rows.append((name, get_tokenizer(name).family, n, tps, mbps, p50, p99))
    fast = preflight_fast_path(body, args.seconds)
    table = Table(
        title=f"Token counting ({len(text):,} characters in seven scripts; a {body_bytes:,}-byte chat request)"
    )
    headers = ("tokenizer", "family", "tokens in corpus", "tokens/s", "MB/s", "request p50 µs", "request p99 µs")
    for h in headers:
        table.add_column(h, justify="left" if h in ("tokenizer", "family") else "right")
    for name, family, n, tps, mbps, p50, p99 in rows:
        table.add_row(name, family, f"{n:,}", f"{tps:,.0f}", f"{mbps:.1f}", f"{p50:.0f}", f"{p99:.0f}")
    console = Console(width=160)
    console.print(table)
    console.print(f"pre-flight fast path (a request far from its window is not counted): {fast:.2f} µs at p50")
    md = [
        "# Token counting benchmark",
        "",
        f"`python bench/tokens.py --seconds {args.seconds:g}` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; "
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}.",
        "",
        f"Corpus: {len(text):,} characters of support questions in seven scripts. Request: a {body_bytes:,}-byte "
        "chat (system prompt, seven turns, a tool result, one tool definition), counted with its family's chat format.",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
    ]
    md += [f"| {n} | {f} | {c:,} | {t:,.0f} | {m:.1f} | {a:.0f} | {b:.0f} |" for n, f, c, t, m, a, b in rows]
    md += [
        "",
        f"Pre-flight fast path: {fast:.2f} µs at p50 for the same request against a 131,072-token window "
        "(no counting: its size bounds its tokens). The recorder counts every recorded request and response "
        "off the request path, in its writer thread; the request column is that cost per record.",
        "",
    ]
    args.output.write_text("\n".join(md))
    console.print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
