"""Scale-out benchmark: two gateway replicas on one machine, on the embedded store and on the server
backends, side by side in one run; then a group-by and the slice finder over a large synthetic record
on ClickHouse's engine (chdb) beside DuckDB.

Usage:
    python bench/scale.py [--duration S] [--connections C] [--rounds N] [--probes N]
                          [--analysis-spans 10000000] [--slice-spans 1000000] [--skip-replicas]
                          [--workdir /tmp/airlock-bench-scale] [--output bench/RESULTS-scale.md]

It starts, on 127.0.0.1 and Unix sockets only: ``airlock sim`` (no delays), PostgreSQL and Redis
(tests/servers.py), moto's S3 server, a ClickHouse engine (chdb behind ClickHouse's HTTP interface,
tests/clickhouse_http.py, as no ClickHouse server installs here), and for each deployment two
``airlock serve`` replicas with data directories of their own and one limit rule (high enough never to
refuse, so its buckets are on every request's path):

* ``embedded``: each replica on its own data directory (SQLite state and limits, local packs);
* ``servers``: both replicas on one PostgreSQL (control-plane state), one Redis (limits), one
  ClickHouse (the record) and one S3 bucket (payload packs).

For each round and deployment, two ``wrk`` processes (one per replica, ``--connections`` each) post a
small chat completion for ``--duration`` seconds at once; requests per second are their sum. Then the
record's lag: ``--probes`` marked requests one after another, each timed from its response to the
moment its span is readable in that deployment's record. The table gives the median round and the
servers/embedded ratio; only ratios within one run mean anything on this shared machine.

The analyses: ``--analysis-spans`` synthetic spans (8 dimensions, user_id with a million values, a
planted failing slice) written as the embedded store's segments (kept in --workdir between runs), then
inserted into a chdb database migrated by the ClickHouse backend; each query and the slice finder run
through the product's own readers on both, best of three, warm.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))

import servers  # noqa: E402  (tests/servers.py: PostgreSQL and Redis on Unix sockets)
from gatewaybench.common import console  # noqa: E402
from gatewaybench.procs import Procs, free_port, stop_on_signals, wait_ready  # noqa: E402
from gatewaybench.systems import airlock_bin, start_sim  # noqa: E402
from gatewaybench.wrk import run_wrk  # noqa: E402

KEY = "sk-bench-scale"
BUCKET = "airlock-bench"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    p.add_argument("--connections", type=int, default=8, help="wrk connections per replica (default 8)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--probes", type=int, default=20, help="marked requests for the record's lag (default 20)")
    p.add_argument("--analysis-spans", type=int, default=10_000_000, help="spans for the group-by (0: skip)")
    p.add_argument("--slice-spans", type=int, default=1_000_000, help="spans for the slice finder (0: skip)")
    p.add_argument("--skip-replicas", action="store_true", help="only the analyses")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/airlock-bench-scale"), help="kept synthetic records")
    p.add_argument("--output", type=Path, default=BENCH / "RESULTS-scale.md")
    return p.parse_args(argv)


def replica_config(workdir: Path, name: str, sim: str, store: dict[str, object]) -> Path:
    folder = workdir / name
    folder.mkdir(parents=True)
    cfg = {
        "data_dir": str(folder / "data"),
        "node": {"name": name, "region": "eu-west-1"},
        "server": {"host": "127.0.0.1", "port": free_port()},
        "store": store,
        "upstreams": [
            {
                "name": "sim",
                "base_url": sim,
                "region": "eu-west-1",
                "jurisdiction": "EU",
                "deployment": "simulator",
                "models": [{"name": "sim-large"}],
            }
        ],
        "limits": [{"name": "per-tenant", "per": ["tenant"], "requests": 10_000_000, "window_s": 60}],
        "api_keys": [{"tenant": "bench", "key_sha256": hashlib.sha256(KEY.encode()).hexdigest()}],
    }
    path = folder / "airlock.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def start_replicas(procs: Procs, label: str, configs: list[Path], env: dict[str, str]) -> list[tuple[str, Path]]:
    out = []
    for i, config in enumerate(configs):
        cfg = yaml.safe_load(config.read_text())
        proc = procs.start(f"{label}-{i}", [airlock_bin(), "serve", "-c", str(config)], env={**os.environ, **env})
        url = f"http://127.0.0.1:{cfg['server']['port']}"
        wait_ready(proc, url + "/healthz", 60)
        out.append((url, Path(cfg["data_dir"])))
    return out


def throughput(replicas: list[tuple[str, Path]], conns: int, duration: int) -> tuple[float, float, int]:
    """Both replicas loaded at once: total req/s, the worse p99 (ms), errors."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(replicas)) as pool:
        results = list(pool.map(lambda r: run_wrk(r[0] + "/v1/chat/completions", KEY, conns, duration), replicas))
    rps = sum(r["requests"] / (r["duration_us"] / 1e6) for r in results)
    p99 = max(r["p99_us"] for r in results) / 1000
    errors = sum(r["status_errors"] + r["connect_errors"] + r["read_errors"] + r["timeouts"] for r in results)
    return rps, p99, errors


def record_lag(replicas: list[tuple[str, Path]], probes: int, clickhouse: str | None) -> list[float]:
    """Seconds from a marked request's response to its span being readable, alternating replicas: in
    the replica's own segments, or in the shared ClickHouse."""
    from airlock.store.embedded import DataDir, DuckDBSpanReader

    transport = None
    if clickhouse is not None:
        from airlock.store.clickhouse.transport import HttpTransport

        transport = HttpTransport(clickhouse, "record")
    lags = []
    with httpx.Client(timeout=10) as client:
        for i in range(probes):
            url, data = replicas[i % len(replicas)]
            mark = uuid.uuid4().hex
            client.post(
                url + "/v1/chat/completions",
                json={"model": "sim-large", "messages": [{"role": "user", "content": "probe"}], "max_tokens": 4},
                headers={"Authorization": f"Bearer {KEY}", "x-airlock-attr-probe": mark},
            ).raise_for_status()
            done = time.monotonic()
            reader = DuckDBSpanReader(DataDir.at(data))
            while time.monotonic() - done < 30:
                if transport is not None:
                    found = transport.query_rows(
                        "SELECT 1 FROM spans WHERE attributes['probe'] = {mark:String} LIMIT 1", {"mark": mark}
                    )
                else:
                    found = reader.sql("SELECT 1 FROM spans WHERE attributes['probe'] = ? LIMIT 1", [mark])
                if found:
                    break
                time.sleep(0.01)
            lags.append(time.monotonic() - done)
    return lags


def replicas_section(args: argparse.Namespace, workdir: Path) -> str:
    backends = workdir / "servers"
    procs = Procs(workdir)
    with stop_on_signals():
        try:
            console.print("[bold]starting the sim, PostgreSQL, Redis, moto's S3 server, a ClickHouse engine")
            sim = start_sim(procs, "sim", 8)
            env = dict(servers.start(backends))
            s3_port, ch_port = free_port(), free_port()
            moto = str(Path(sys.executable).with_name("moto_server"))
            s3 = procs.start("s3", [moto, "-H", "127.0.0.1", "-p", str(s3_port)])
            endpoint = f"http://127.0.0.1:{s3_port}"
            wait_ready(s3, endpoint, 30)
            clickhouse = f"http://127.0.0.1:{ch_port}"
            engine = BENCH.parent / "tests" / "clickhouse_http.py"
            ch = procs.start("clickhouse", [sys.executable, str(engine), str(ch_port), str(workdir / "chdb")])
            wait_ready(ch, clickhouse + "/ping", 60)
            import boto3

            boto3.client(
                "s3", endpoint_url=endpoint, aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1"
            ).create_bucket(Bucket=BUCKET)
            env.update({"BENCH_S3_KEY": "k", "BENCH_S3_SECRET": "s", "BENCH_CH_URL": clickhouse})
            shared = {
                "postgres": {"dsn_env": "AIRLOCK_TEST_POSTGRES_DSN"},
                "redis": {"url_env": "AIRLOCK_TEST_REDIS_URL", "prefix": "bench:"},
                "clickhouse": {"url_env": "BENCH_CH_URL", "database": "record"},
                "s3": {"endpoint": endpoint, "bucket": BUCKET, "access_key_env": "BENCH_S3_KEY",
                       "secret_key_env": "BENCH_S3_SECRET"},
            }  # fmt: skip
            deployments = {
                "embedded": start_replicas(
                    procs, "embedded", [replica_config(workdir, f"embedded-{i}", sim, {}) for i in range(2)], env
                ),
                "servers": start_replicas(
                    procs, "servers", [replica_config(workdir, f"servers-{i}", sim, shared) for i in range(2)], env
                ),
            }
            rows: dict[str, list[tuple[float, float, int]]] = {name: [] for name in deployments}
            for r in range(args.rounds):
                for name, replicas in deployments.items():
                    console.print(f"round {r + 1}/{args.rounds}: {name}, 2 replicas x {args.connections} connections")
                    rows[name].append(throughput(replicas, args.connections, args.duration))
            lags = {
                name: record_lag(replicas, args.probes, clickhouse if name == "servers" else None)
                for name, replicas in deployments.items()
            }
        finally:
            procs.stop_all()
            servers.stop(backends)
    base = statistics.median(r[0] for r in rows["embedded"])
    lines = [
        "| deployment | replicas x connections | req/s (median round) | ratio to embedded | p99 ms | errors "
        "| record lag p50 ms | record lag max ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, results in rows.items():
        rps = statistics.median(r[0] for r in results)
        p99 = statistics.median(r[1] for r in results)
        errors = sum(r[2] for r in results)
        lag = sorted(lags[name])
        lines.append(
            f"| {name} | 2 x {args.connections} | {rps:,.0f} | {rps / base:.2f} | {p99:.1f} | {errors} "
            f"| {statistics.median(lag) * 1000:.0f} | {lag[-1] * 1000:.0f} |"
        )
    return "## Two replicas\n\n" + "\n".join(lines) + "\n"


def timed(fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def best_of(n: int, fn: Any) -> tuple[float, Any]:
    return min((timed(fn) for _ in range(n)), key=lambda t: float(t[0]))


def into_chdb(data: Any, folder: Path, database: str) -> tuple[Any, float]:
    """The synthetic segments inserted into a chdb database migrated by the ClickHouse backend."""
    import pyarrow.parquet as pq

    from airlock.store.clickhouse.migrate import apply_migrations
    from airlock.store.clickhouse.transport import ChdbTransport, quoted

    transport = ChdbTransport(folder, database)
    apply_migrations(transport)
    if transport.query_rows("SELECT count() AS n FROM spans")[0]["n"]:
        return transport, 0.0
    files = sorted(data.spans.glob("*.parquet"))
    names = pq.read_schema(files[0]).names
    cols = ", ".join(quoted(n) for n in names)
    started = time.perf_counter()
    for seq, path in enumerate(files):
        transport.command(
            f"INSERT INTO spans ({cols}, writer_id, seq) SELECT {cols}, 'synthetic', {seq}"
            f" FROM file('{path}', 'Parquet')"
        )
    return transport, time.perf_counter() - started


def analyses_section(args: argparse.Namespace) -> str:
    from airlock.query import Filter, QuerySpec, run_query
    from airlock.slices import SliceOptions, find_slices
    from airlock.store.clickhouse.query import ClickHouseSpanQuery
    from airlock.store.clickhouse.slices import ClickHouseSliceCandidates
    from airlock.store.embedded.query_engine import DuckDBSpanQuery
    from airlock.store.embedded.slices import ParquetSliceCandidates
    from airlock.store.embedded.synthetic import Workload
    from telemetry import PLANTED, QUERY_ATTRIBUTES, _dataset, _slice_attributes

    out = []
    args.workdir.mkdir(parents=True, exist_ok=True)
    chdb_folder = args.workdir / "chdb"
    if args.analysis_spans:
        n = args.analysis_spans
        console.print(f"[bold]analyses: airlock query on {n:,} spans, DuckDB beside ClickHouse (chdb)")
        workload = Workload(n, QUERY_ATTRIBUTES, planted=[PLANTED], spans_per_segment=1_000_000)
        data, _ = _dataset(args.workdir, f"query-{n}", workload)
        transport, inserted = into_chdb(data, chdb_folder, f"query_{n}")
        queries = [
            ("group by user_id (1M distinct), top 20 by spans", QuerySpec(by=("user_id",))),
            ("group by user_id, top 20 by p95", QuerySpec(by=("user_id",), sort="p95_ms")),
            ("group by feature x region", QuerySpec(by=("feature", "region"))),
            ("filter locale=l3, group by user_id", QuerySpec(by=("user_id",), where=(Filter.parse("locale=l3"),))),
        ]
        duck, house = DuckDBSpanQuery(data), ClickHouseSpanQuery(transport)
        run_query(duck, QuerySpec(limit=1))  # the query copies, built once
        lines = ["| query | DuckDB (embedded) s | ClickHouse (chdb) s | ratio |", "|---|---|---|---|"]
        for label, spec in queries:
            d = min(timed(lambda spec=spec: run_query(duck, spec))[0] for _ in range(3))
            c = min(timed(lambda spec=spec: run_query(house, spec))[0] for _ in range(3))
            lines.append(f"| {label} | {d:.2f} | {c:.2f} | {c / d:.2f} |")
        note = f" (inserted into chdb in {inserted:.0f} s)" if inserted else ""
        out.append(f"## airlock query on {n:,} spans{note}\n\n" + "\n".join(lines) + "\n")
    if args.slice_spans:
        n = args.slice_spans
        console.print(f"[bold]analyses: airlock slices on {n:,} spans, DuckDB beside ClickHouse (chdb)")
        workload = Workload(n, _slice_attributes(), planted=[PLANTED], spans_per_segment=250_000)
        data, _ = _dataset(args.workdir, f"slices-planted-{n}", workload)
        transport, _ = into_chdb(data, chdb_folder, f"slices_{n}")
        duck_slices, house_slices = ParquetSliceCandidates(data), ClickHouseSliceCandidates(transport)
        find_slices(duck_slices, SliceOptions())
        d, report_d = min(
            (timed(lambda: find_slices(duck_slices, SliceOptions())) for _ in range(3)), key=lambda t: t[0]
        )
        c, report_c = min(
            (timed(lambda: find_slices(house_slices, SliceOptions())) for _ in range(3)), key=lambda t: t[0]
        )
        top_d = report_d.slices[0].label() if report_d.slices else "-"
        top_c = report_c.slices[0].label() if report_c.slices else "-"
        out.append(
            f"## airlock slices on {n:,} spans, 50 dimensions, a planted slice\n\n"
            "| store | warm s | top finding |\n|---|---|---|\n"
            f"| DuckDB (embedded) | {d:.2f} | {top_d} |\n| ClickHouse (chdb) | {c:.2f} | {top_c} |\n"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sections = []
    if not args.skip_replicas:
        workdir = Path(tempfile.mkdtemp(prefix="airlock-scale-"))
        workdir.chmod(0o755)  # PostgreSQL runs as its own user and must reach its folder inside
        sections.append(replicas_section(args, workdir))
    if args.analysis_spans or args.slice_spans:
        sections.append(analyses_section(args))
    body = "\n".join(sections)
    console.print(body)
    given = " ".join(argv if argv is not None else sys.argv[1:])
    header = f"# Scale-out benchmark\n\n`python bench/scale.py {given}` on {os.cpu_count()} cores.\n\n"
    args.output.write_text(header + body)
    console.print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
