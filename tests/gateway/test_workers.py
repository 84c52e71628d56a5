"""Several worker processes on one port, each writing its own segments."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from airlock.store.embedded import DataDir, DuckDBSpanReader
from helpers import API_KEY, Gateway, Sim, wait_recorded, write_config


def test_two_workers_share_a_port_and_record_everything(tmp_path: Path, sims: dict[str, Sim]) -> None:
    gw = Gateway(write_config(tmp_path, {"sim-eu": sims["sim-eu"]}), "--workers", "2")
    try:
        for i in range(60):  # a fresh connection each time, so the kernel spreads them over the workers
            with httpx.Client() as c:
                r = c.post(
                    f"{gw.url}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {API_KEY}"},
                    json={"model": "chat", "messages": [{"role": "user", "content": f"w{i}"}]},
                )
                assert r.status_code == 200
        wait_recorded(gw.data_dir, 60)
        reader = DuckDBSpanReader(DataDir.at(gw.data_dir))
        writers = {p.name.split(".")[0] for p in (gw.data_dir / "segments" / "spans").glob("*.parquet")}
        assert len(writers) == 2
        assert reader.sql("SELECT count(*) AS n, count(DISTINCT span_id) AS d FROM spans")[0] == {"n": 60, "d": 60}
        metrics = httpx.get(f"{gw.url}/metrics").text
        assert "airlock_workers 2" in metrics
    finally:
        gw.stop()
    assert gw.p.returncode == 0


def _health(gw: Gateway) -> dict[str, Any]:
    with httpx.Client() as c:  # a fresh connection: any worker may answer
        return dict(c.get(f"{gw.url}/healthz").json())


def test_a_killed_worker_is_replaced_and_health_says_what_happened(tmp_path: Path, sims: dict[str, Sim]) -> None:
    gw = Gateway(write_config(tmp_path, {"sim-eu": sims["sim-eu"]}), "--workers", "2")
    try:
        deadline = time.monotonic() + 20  # the gateway answers as soon as its first worker serves
        while (health := _health(gw)).get("workers", {}).get("alive") != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert health["status"] == "ok" and health["workers"]["expected"] == 2 and health["workers"]["alive"] == 2
        state = json.loads((gw.data_dir / "run" / "supervisor.state").read_text())
        victim = state["pids"][0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                health = _health(gw)
            except httpx.TransportError:  # a connection the killed worker had accepted (its port's queue) is reset
                continue
            if health["workers"]["restarts"] == 1 and health["workers"]["alive"] == 2:
                break
            time.sleep(0.1)
        assert health["status"] == "ok", health
        workers = health["workers"]
        assert workers["restarts"] == 1 and workers["alive"] == 2, workers
        assert workers["last_exit"]["pid"] == victim and workers["last_exit"]["signal"] == "SIGKILL"
        replacement = json.loads((gw.data_dir / "run" / "supervisor.state").read_text())["pids"]
        assert victim not in replacement and len(replacement) == 2
        r = httpx.post(
            f"{gw.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json={"model": "chat", "messages": [{"role": "user", "content": "after the restart"}]},
        )
        assert r.status_code == 200
    finally:
        gw.stop()
    assert gw.p.returncode == 0
    assert "restarting it" in gw.out and not (gw.data_dir / "run" / "supervisor.state").exists()


def test_a_second_serve_on_a_port_in_use_refuses_and_the_first_keeps_serving(
    tmp_path: Path, sims: dict[str, Sim]
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = Gateway(write_config(tmp_path / "a", {"sim-eu": sims["sim-eu"]}), "--workers", "2")
    try:
        other = write_config(tmp_path / "b", {"sim-eu": sims["sim-eu"]}, port=first.port)
        env = {**os.environ, "TEST_UPSTREAM_KEY": "upstream-secret-123", "TEST_GLOBEX_KEY": "sk-test-globex"}
        second = subprocess.Popen(
            [sys.executable, "-m", "airlock", "serve", "-c", str(other), "--workers", "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            out, _ = second.communicate(timeout=30)
        finally:
            if second.poll() is None:
                os.killpg(second.pid, signal.SIGKILL)
                second.wait()
        assert second.returncode != 0
        assert f"127.0.0.1:{first.port}" in out.decode() and "already served" in out.decode()
        assert not (tmp_path / "b" / "data").exists()
        assert _health(first)["workers"]["alive"] == 2
    finally:
        first.stop()
