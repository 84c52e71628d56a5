"""Line items posted at once to two gateway worker processes (each with its own SQLite connection): every
id is stored once, every retry is recognised as one, and a conflicting body is refused."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from airlock.store.embedded import DataDir
from airlock.store.embedded.ledger import SQLiteLedgerItems
from helpers import API_KEY, Gateway, Sim, write_config


def test_concurrent_retries_across_workers_store_each_item_once(tmp_path: Path, sims: dict[str, Sim]) -> None:
    gw = Gateway(write_config(tmp_path, {"sim-eu": sims["sim-eu"]}), "--workers", "2")

    def post(n: int) -> tuple[int, list[str]]:
        items = [{"id": f"it-{k}", "category": "tool", "amount_usd": 0.01 * k, "task": f"t-{k}"} for k in range(20)]
        with httpx.Client() as c:  # a fresh connection each time, so the kernel spreads them over the workers
            r = c.post(
                f"{gw.url}/v1/ledger/items", json={"items": items}, headers={"Authorization": f"Bearer {API_KEY}"}
            )
        return r.status_code, [i["status"] for i in r.json()["items"]]

    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(post, range(24)))
        conflict = httpx.post(
            f"{gw.url}/v1/ledger/items",
            json={"id": "it-3", "category": "tool", "amount_usd": 5.0, "task": "t-3"},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
    finally:
        gw.stop()
    assert {status for status, _ in results} <= {200, 201}
    created = sum(s.count("created") for _, s in results)
    assert created == 20 and sum(s.count("duplicate") for _, s in results) == 20 * 23
    assert conflict.status_code == 409
    store = SQLiteLedgerItems(DataDir.at(gw.data_dir).state_db)
    try:
        rows = store.in_window(0, 2**62)
    finally:
        store.close()
    assert sorted(r.item_id for r in rows) == sorted(f"it-{k}" for k in range(20))
    assert sum(r.amount_usd for r in rows) == sum(0.01 * k for k in range(20))
