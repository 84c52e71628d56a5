"""Sampling in a running gateway: the background pass decides traces as they complete, compaction
drops the spans of dropped traces, and `airlock sample status` says what was kept and why."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pyarrow.parquet as pq

from airlock.store.embedded import BlobReader, DataDir
from airlock.store.embedded.sampling import SampledReader
from airlock.store.embedded.segments import live_segments
from helpers import API_KEY, Gateway, Sim, write_config


def test_gateway_samples_traces_and_compaction_prunes_the_dropped(tmp_path: Path, sims: dict[str, Sim]) -> None:
    config = write_config(
        tmp_path,
        {"sim-eu": sims["sim-eu"]},
        recorder={"segment_max_age_s": 0.1, "compact_min_segments": 2, "compact_interval_s": 0.2},
        sampling={
            "enabled": True,
            "interval_s": 0.2,
            "decision_wait_s": 0.3,
            "span_budget_per_hour": 2000,  # far below this traffic's rate: most ok traces are dropped
            "rare": {"enabled": False},
            "slow": {"quantile": None},
            "costly": {"quantile": None},
        },
    )
    gw = Gateway(config)
    traces: dict[str, str] = {}
    try:
        with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {API_KEY}"}) as client:
            for i in range(60):
                if i % 15 == 0:
                    time.sleep(0.3)  # waves, so the record has several segments to merge
                tid = os.urandom(16).hex()
                model = "no-such-model" if i % 10 == 0 else "chat"  # a 404: an error trace
                for _ in range(2):  # two calls per trace, under the client's own span
                    client.post(
                        "/v1/chat/completions",
                        json={"model": model, "messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 4},
                        headers={"traceparent": f"00-{tid}-{os.urandom(8).hex()}-01"},
                    )
                traces[tid] = "error" if model == "no-such-model" else "ok"
        reader = SampledReader(DataDir.at(gw.data_dir))
        deadline = time.monotonic() + 30
        decided: dict[str, dict] = {}
        while time.monotonic() < deadline and len(decided) < len(traces):
            time.sleep(0.2)
            rows = reader.sql(
                "SELECT trace_id, keep, reason, adjusted_count, spans FROM sample_decisions WHERE traces = 1"
            )
            decided = {r["trace_id"]: r for r in rows}
        assert set(decided) == set(traces)
        for tid, status in traces.items():
            if status == "error":
                assert decided[tid]["keep"] and decided[tid]["reason"] == "error"
        kept = {t for t, d in decided.items() if d["keep"]}
        assert len(kept) < len(traces)  # some were dropped
        # Compaction (in the gateway's writer) merges only decided segments, dropping dropped traces' spans.
        deadline = time.monotonic() + 30
        in_merged: set[str] = set()
        while time.monotonic() < deadline and not in_merged:
            time.sleep(0.2)
            for seg in live_segments(reader.data.spans):
                if seg.first < seg.last:
                    with contextlib.suppress(FileNotFoundError):  # merged again meanwhile
                        in_merged |= set(pq.read_table(seg.path, columns=["trace_id"])["trace_id"].to_pylist())
        assert in_merged, ("no compaction happened", [s.path.name for s in live_segments(reader.data.spans)])
        assert in_merged and in_merged <= kept
    finally:
        gw.stop()
    # With the gateway stopped, gc drops the rest (segments too small to be merged again) and the payloads.
    gc = subprocess.run([sys.executable, "-m", "airlock", "sample", "gc", "-c", str(config)], capture_output=True)
    assert gc.returncode == 0, gc.stderr
    present = {r["trace_id"] for r in reader.sql("SELECT DISTINCT trace_id FROM spans")}
    assert present == kept
    digests = reader.sql(
        'SELECT DISTINCT unnest(["airlock.payload.request", "airlock.payload.response"]) AS d FROM spans'
    )
    wanted = [r["d"] for r in digests if r["d"]]
    assert all(isinstance(b, bytes) for b in BlobReader(reader.data).get_many(wanted).values())
    assert len(BlobReader(reader.data).get_many(wanted)) == len(wanted)
    status = subprocess.run(
        [sys.executable, "-m", "airlock", "sample", "status", "-c", str(config), "--json"],
        capture_output=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    doc = orjson.loads(status.stdout)
    assert doc["totals"]["traces"][0] == len(traces)  # exact, dropped ones included
    assert {(r["outcome"], r["reason"]) for r in doc["by_reason"]} >= {("kept", "error"), ("dropped", "rate")}
    text = subprocess.run(
        [sys.executable, "-m", "airlock", "sample", "status", "-c", str(config)], capture_output=True, text=True
    )
    assert "What was kept and why" in text.stdout and "estimated" not in text.stderr


def test_two_workers_one_sampler_each_trace_decided_once_with_spans_from_both(
    tmp_path: Path, sims: dict[str, Sim]
) -> None:
    config = write_config(
        tmp_path,
        {"sim-eu": sims["sim-eu"]},
        sampling={"enabled": True, "interval_s": 0.2, "decision_wait_s": 0.5, "span_budget_per_hour": 500},
    )
    gw = Gateway(config, "--workers", "2")
    traces = [os.urandom(16).hex() for _ in range(20)]
    try:
        for tid in traces:
            for _ in range(3):  # a fresh connection each call: the kernel spreads a trace over both workers
                with httpx.Client() as c:
                    r = c.post(
                        f"{gw.url}/v1/chat/completions",
                        headers={"Authorization": f"Bearer {API_KEY}", "traceparent": f"00-{tid}-{'1' * 16}-01"},
                        json={"model": "chat", "messages": [{"role": "user", "content": tid}], "max_tokens": 4},
                    )
                    assert r.status_code == 200
        reader = SampledReader(DataDir.at(gw.data_dir))
        deadline = time.monotonic() + 30
        rows: list[dict] = []
        while time.monotonic() < deadline:
            rows = reader.sql("SELECT trace_id, traces, spans FROM sample_decisions")
            if sum(r["spans"] for r in rows) >= 60:
                break
            time.sleep(0.2)
    finally:
        gw.stop()
    writers = {p.name.split(".")[0] for p in (gw.data_dir / "segments" / "spans").glob("*.parquet")}
    assert len(writers) == 2
    assert sorted(r["trace_id"] for r in rows if r["traces"] == 1) == sorted(traces)  # once each
    assert sum(r["spans"] for r in rows) == 60
