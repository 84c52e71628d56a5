"""Who may push GPU energy readings, on a real gateway: only a key under energy.readings_keys. Readings are
node-level (they split every tenant's energy), so a tenant's model API key gets 403, and no key, a malformed
or an unknown one 401, on POST and on any other method; a readings key is no model API key."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest

from airlock.store.embedded import DataDir
from airlock.store.embedded.energy import SQLiteEnergyReadings
from helpers import API_KEY, OTHER_KEY, Gateway, Sim, write_config

READINGS_KEY = "sk-test-gpu-host"
READINGS_AUTH = {"Authorization": f"Bearer {READINGS_KEY}"}
PATH = "/v1/energy/readings"


def readings(device: str = "gpu-0", base: int = 0) -> dict[str, object]:
    return {"readings": [{"device": device, "t_ns": 10_000 + base + i, "energy_mj": 100 + i} for i in range(2)]}


@pytest.fixture(scope="module")
def gw(sims: dict[str, Sim], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    energy = {
        "gpus": [{"device": "gpu-0", "upstream": "sim-eu"}],
        "readings_keys": [{"name": "gpu-host", "key_sha256": hashlib.sha256(READINGS_KEY.encode()).hexdigest()}],
    }
    g = Gateway(write_config(tmp_path_factory.mktemp("readings"), sims, energy=energy))
    yield g
    g.stop()


def stored(gw: Gateway) -> list[int]:
    store = SQLiteEnergyReadings(DataDir.at(gw.data_dir).state_db)
    try:
        return [r.t_ns for r in store.of("gpu-0")]
    finally:
        store.close()


def is_problem(r: httpx.Response, status: int) -> bool:
    return r.status_code == status and r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("key", [API_KEY, OTHER_KEY])
def test_a_tenants_key_may_not_push_readings(gw: Gateway, key: str) -> None:
    r = httpx.post(f"{gw.url}{PATH}", json=readings(base=500), headers={"Authorization": f"Bearer {key}"})
    assert is_problem(r, 403), r.text
    assert "energy.readings_keys" in r.json()["detail"]
    assert 10_500 not in stored(gw)


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Basic " + READINGS_KEY, "Bearer wrong", "Bearer " + "k" * 6000, READINGS_KEY],
    ids=["none", "empty", "no-key", "basic", "unknown", "oversized", "no-scheme"],
)
def test_no_or_a_bad_key_is_401_on_every_method(gw: Gateway, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for method in ("POST", "GET", "PUT", "DELETE"):
        r = httpx.request(method, f"{gw.url}{PATH}", json=readings(base=900), headers=headers)
        assert is_problem(r, 401), (method, r.status_code, r.text)
    assert 10_900 not in stored(gw)


def test_the_readings_key_pushes_and_does_nothing_else(gw: Gateway) -> None:
    r = httpx.post(f"{gw.url}{PATH}", json=readings(), headers=READINGS_AUTH)
    assert r.status_code == 201 and r.json() == {"accepted": 2, "new": 2}
    assert {10_000, 10_001} <= set(stored(gw))
    assert is_problem(httpx.get(f"{gw.url}{PATH}", headers=READINGS_AUTH), 405)
    chat = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{gw.url}/v1/chat/completions", json=chat, headers=READINGS_AUTH).status_code == 401
    otlp = httpx.post(f"{gw.url}/v1/traces", json={"resourceSpans": []}, headers=READINGS_AUTH)
    assert otlp.status_code == 401
