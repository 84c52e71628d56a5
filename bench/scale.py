"""Scale-out benchmark: two gateway replicas on one machine, on the embedded store and on the server
backends, side by side in one run.

Usage:
    python bench/scale.py [--duration S] [--connections C] [--rounds N] [--probes N]
                          [--output bench/RESULTS-scale.md]

It starts, on 127.0.0.1 and Unix sockets only: ``airlock sim`` (no delays), PostgreSQL and Redis
(tests/servers.py), moto's S3 server, and for each deployment two ``airlock serve`` replicas with data
directories of their own and one limit rule (high enough never to refuse, so its buckets are on every
request's path):

* ``embedded``: each replica on its own data directory (SQLite state and limits, local packs);
* ``servers``: both replicas on one PostgreSQL (control-plane state), one Redis (limits) and one S3
  bucket (payload packs), the record in each replica's segments.

For each round and deployment, two ``wrk`` processes (one per replica, ``--connections`` each) post a
small chat completion for ``--duration`` seconds at once; requests per second are their sum. Then the
record's lag: ``--probes`` marked requests one after another, each timed from its response to the
moment its span is readable by ``airlock``'s own reader. The table gives the median round and the
servers/embedded ratio; only ratios within one run mean anything on this shared machine.
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


def record_lag(replicas: list[tuple[str, Path]], probes: int) -> list[float]:
    """Seconds from a marked request's response to its span being readable, alternating replicas."""
    from airlock.store.embedded import DataDir, DuckDBSpanReader

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
                if reader.sql("SELECT 1 FROM spans WHERE attributes['probe'] = ? LIMIT 1", [mark]):
                    break
                time.sleep(0.01)
            lags.append(time.monotonic() - done)
    return lags


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="airlock-scale-"))
    workdir.chmod(0o755)  # PostgreSQL runs as its own user and must reach its folder inside
    backends = workdir / "servers"
    procs = Procs(workdir)
    with stop_on_signals():
        try:
            console.print("[bold]starting the sim, PostgreSQL, Redis, moto's S3 server")
            sim = start_sim(procs, "sim", 8)
            env = dict(servers.start(backends))
            s3_port = free_port()
            s3 = procs.start(
                "s3", [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(s3_port)]
            )
            endpoint = f"http://127.0.0.1:{s3_port}"
            wait_ready(s3, endpoint, 30)
            import boto3

            boto3.client(
                "s3", endpoint_url=endpoint, aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1"
            ).create_bucket(Bucket=BUCKET)
            env.update({"BENCH_S3_KEY": "k", "BENCH_S3_SECRET": "s"})
            shared = {
                "postgres": {"dsn_env": "AIRLOCK_TEST_POSTGRES_DSN"},
                "redis": {"url_env": "AIRLOCK_TEST_REDIS_URL", "prefix": "bench:"},
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
            lags = {name: record_lag(replicas, args.probes) for name, replicas in deployments.items()}
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
    table = "\n".join(lines)
    console.print(table)
    header = (
        f"# Scale-out benchmark\n\n`python bench/scale.py --duration {args.duration} --connections "
        f"{args.connections} --rounds {args.rounds} --probes {args.probes}` on {os.cpu_count()} cores.\n\n"
    )
    args.output.write_text(header + table + "\n")
    console.print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
