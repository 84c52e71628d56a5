"""`airlock demo` runs end to end and its record holds what the report claims."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from airlock.store.embedded import DataDir, DuckDBSpanReader


def test_demo_runs_and_records_failover_and_failures(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    run = subprocess.run(
        [sys.executable, "-m", "airlock", "demo", "--data-dir", str(root), "--tasks", "8"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Explore the record" in run.stdout and "Tasks that did not complete" in run.stdout
    assert "Tail sampling" in run.stdout and "sample status -c" in run.stdout
    reader = DuckDBSpanReader(DataDir.at(root / "data"))
    by_status = {
        r["status"]: r["n"]
        for r in reader.sql('SELECT status, count(*) AS n FROM spans WHERE "airlock.source" IS NULL GROUP BY 1')
    }
    errors = reader.sql(
        'SELECT kind, error_type, error_message, "airlock.task", "airlock.replay.run" FROM spans'
        " WHERE status = 'error' AND \"airlock.source\" IS NULL"
    )
    assert by_status["ok"] > 8 and by_status["error"] == 2, (by_status, errors)  # the revoked key, the unrouted model
    cancelled = reader.sql("SELECT \"airlock.task\" AS task, error_message FROM spans WHERE status = 'cancelled'")
    assert "task-abandoned" in {c["task"] for c in cancelled}, cancelled
    outcomes = {(r["upstream"], r["outcome"]) for r in reader.sql("SELECT DISTINCT upstream, outcome FROM hops")}
    assert ("sim-eu", "http_5xx") in outcomes and ("sim-us", "ok") in outcomes
    tasks = reader.sql(
        "SELECT count(DISTINCT trace_id) AS n FROM spans WHERE \"airlock.task\" LIKE 'task-0%'"
        ' AND "airlock.replay.run" IS NULL'
    )
    assert tasks[0]["n"] == 8
    # The bill: posted line items beside inference, and energy for every call that reached a model.
    from airlock.config import load_config
    from airlock.energy.report import energy_report
    from airlock.ledger import cost_report

    config = load_config(root / "airlock.yaml")
    bill = cost_report(config, ["feature"])
    assert {"inference", "human_review", "vector_db", "telemetry_storage"} <= set(bill.categories)
    assert 0 < bill.total.inference_share < 0.5
    energy = energy_report(config, ["model_tier"])
    assert energy.total["calls"] > 8 and energy.total["tokens_per_j"] > 0 and not energy.no_energy
    # the OpenTelemetry-instrumented bot: its spans joined the gateway's, and its planted slice is named first
    assert "1. airlock.prompt.version=v8 & client.region=ap-south-1" in run.stdout
    joined = reader.sql(
        """SELECT count(DISTINCT o.trace_id) AS n FROM spans o JOIN spans g USING (trace_id)
           WHERE o."airlock.source" = 'otlp' AND g.kind = 'model.chat' AND g.parent_span_id = o.span_id"""
    )
    assert joined[0]["n"] == 180  # every bot trace: the gateway's span under the app's root span
