"""Several worker processes on one port, each writing its own segments."""

from __future__ import annotations

from pathlib import Path

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
