"""The gateway's own health as Prometheus text. Low cardinality only: endpoint, status class,
upstream name (from config), attempt outcome. Each worker keeps counters in memory and publishes them
in its status file; /metrics sums the status files of every live worker, so a scrape that lands on
any one worker still sees the whole host."""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from airlock.record.losses import Losses, read_losses

LATENCY_BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)


_REQUEST_KEYS: dict[tuple[str, int], str] = {}


class GatewayMetrics:
    def __init__(self) -> None:
        self.requests: dict[str, int] = {}  # "endpoint|class" -> count
        self.attempts: dict[str, int] = {}  # "upstream|outcome" -> count
        self.latency: dict[str, list[float]] = {}  # endpoint -> bucket counts (+inf last), sum at end
        self.in_flight = 0
        # OTLP: spans accepted/rejected by /v1/traces, requests refused whole, spans exported on
        self.otlp: dict[str, int] = dict.fromkeys(
            ("accepted", "rejected", "requests_rejected", "exported", "export_failures"), 0
        )

    def request_done(self, endpoint: str, status: int, ms: float) -> None:
        key = _REQUEST_KEYS.get((endpoint, status // 100))
        if key is None:
            key = _REQUEST_KEYS[(endpoint, status // 100)] = f"{endpoint}|{status // 100}xx"
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.latency.get(endpoint)
        if hist is None:
            hist = self.latency[endpoint] = [0.0] * (len(LATENCY_BUCKETS_MS) + 2)
        hist[bisect.bisect_left(LATENCY_BUCKETS_MS, ms)] += 1
        hist[-1] += ms

    def attempt(self, upstream: str, outcome: str) -> None:
        key = f"{upstream}|{outcome}"
        self.attempts[key] = self.attempts.get(key, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "attempts": dict(self.attempts),
            "latency": {k: list(v) for k, v in self.latency.items()},
            "in_flight": self.in_flight,
            "otlp": dict(self.otlp),
        }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_statuses(run_dir: Path, live_only: bool = True, losses: Losses | None = None) -> list[dict[str, Any]]:
    """The status file of each writer (only live ones if `live_only`). A status file is rewritten by
    renaming a new one over it, which a full disk refuses: its `dropped` (and reasons) are raised to
    what the writer's loss files say (`record/losses.py`), which a full disk cannot refuse."""
    losses = losses if losses is not None else read_losses(run_dir)
    out = []
    for path in sorted(run_dir.glob("*.json")):
        try:
            status = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        status["alive"] = not status.get("stopped") and _alive(int(status.get("pid", -1)))
        lost, reasons = losses.of(str(status.get("writer_id")), status.get("worker"))
        if lost > int(status.get("dropped") or 0):
            status["dropped"], status["drop_reasons"] = lost, reasons
        if status["alive"] or not live_only:
            out.append(status)
    return out


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(statuses: Iterable[dict[str, Any]]) -> str:
    requests: dict[str, int] = {}
    attempts: dict[str, int] = {}
    latency: dict[str, list[float]] = {}
    totals = {
        k: 0 for k in ("queue_depth", "accepted", "spilled", "dropped", "written", "in_flight", "writer_catch_ups")
    }
    otlp: dict[str, int] = {}
    workers = errors = 0
    for st in statuses:
        workers += 1
        errors += 1 if st.get("error") else 0
        for k in totals:
            totals[k] += int(st.get(k) or 0)
        for k, v in (st.get("requests") or {}).items():
            requests[k] = requests.get(k, 0) + v
        for k, v in (st.get("attempts") or {}).items():
            attempts[k] = attempts.get(k, 0) + v
        for k, v in (st.get("otlp") or {}).items():
            otlp[k] = otlp.get(k, 0) + int(v)
        for k, hist in (st.get("latency") or {}).items():
            acc = latency.setdefault(k, [0.0] * len(hist))
            for i, x in enumerate(hist):
                acc[i] += x
    lines = [
        "# HELP airlock_requests_total Requests answered, by endpoint and status class.",
        "# TYPE airlock_requests_total counter",
    ]
    for key, n in sorted(requests.items()):
        endpoint, cls = key.split("|")
        lines.append(f'airlock_requests_total{{endpoint="{_esc(endpoint)}",code="{cls}"}} {n}')
    lines += [
        "# HELP airlock_upstream_attempts_total Upstream attempts, by upstream and outcome.",
        "# TYPE airlock_upstream_attempts_total counter",
    ]
    for key, n in sorted(attempts.items()):
        upstream, outcome = key.split("|")
        lines.append(f'airlock_upstream_attempts_total{{upstream="{_esc(upstream)}",outcome="{outcome}"}} {n}')
    lines += [
        "# HELP airlock_request_duration_ms Time to the last byte of the response, in milliseconds.",
        "# TYPE airlock_request_duration_ms histogram",
    ]
    for endpoint, hist in sorted(latency.items()):
        cumulative = 0.0
        for bound, in_bucket in zip((*LATENCY_BUCKETS_MS, "+Inf"), hist[:-1], strict=True):
            cumulative += in_bucket
            lines.append(
                f'airlock_request_duration_ms_bucket{{endpoint="{_esc(endpoint)}",le="{bound}"}} {cumulative:g}'
            )
        lines.append(f'airlock_request_duration_ms_sum{{endpoint="{_esc(endpoint)}"}} {hist[-1]:g}')
        lines.append(f'airlock_request_duration_ms_count{{endpoint="{_esc(endpoint)}"}} {cumulative:g}')
    gauges = [
        ("airlock_workers", "Live gateway worker processes.", workers),
        ("airlock_in_flight", "Requests being served now.", totals["in_flight"]),
        ("airlock_recorder_queue_depth", "Records waiting for the batch writer.", totals["queue_depth"]),
        ("airlock_recorder_failing_workers", "Workers whose recorder cannot persist right now.", errors),
    ]
    for name, help_text, value in gauges:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
    counters = [
        ("airlock_recorder_accepted_total", "Records handed to the recorder.", totals["accepted"]),
        ("airlock_recorder_spilled_total", "Records spilled to disk because the queue was full.", totals["spilled"]),
        ("airlock_recorder_dropped_total", "Records lost because even the spill failed.", totals["dropped"]),
        ("airlock_recorder_written_total", "Records in finished segments.", totals["written"]),
        (
            "airlock_recorder_writer_catch_ups_total",
            "Times an idle writer process fell behind and got normal scheduling until it caught up.",
            totals["writer_catch_ups"],
        ),
    ]
    for name, help_text, value in counters:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter", f"{name} {value}"]
    lines += [
        "# HELP airlock_otlp_spans_total Spans received on /v1/traces, by outcome (a rejected span is not recorded).",
        "# TYPE airlock_otlp_spans_total counter",
        f'airlock_otlp_spans_total{{outcome="accepted"}} {otlp.get("accepted", 0)}',
        f'airlock_otlp_spans_total{{outcome="rejected"}} {otlp.get("rejected", 0)}',
        "# HELP airlock_otlp_requests_rejected_total OTLP export requests refused whole (unreadable, unauthorised).",
        "# TYPE airlock_otlp_requests_rejected_total counter",
        f"airlock_otlp_requests_rejected_total {otlp.get('requests_rejected', 0)}",
        "# HELP airlock_otlp_exported_spans_total Spans sent on to the configured OTLP collector.",
        "# TYPE airlock_otlp_exported_spans_total counter",
        f"airlock_otlp_exported_spans_total {otlp.get('exported', 0)}",
        "# HELP airlock_otlp_export_failures_total Export attempts the collector did not accept (retried).",
        "# TYPE airlock_otlp_export_failures_total counter",
        f"airlock_otlp_export_failures_total {otlp.get('export_failures', 0)}",
    ]
    return "\n".join(lines) + "\n"
