"""The composition root and the request pipeline: the route's decision and every guard's verdict are on
the span, and a new guard plugs in by being handed to the gateway, without touching the gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from airlock.compose import build_gateway, model_guards, surfaces
from airlock.config.load import load_config
from airlock.errors import Forbidden, StoreUnavailable
from airlock.gateway.app import build_app, build_state
from airlock.guards import GuardChain, GuardedCall, Verdict
from airlock.store import build_stores
from airlock.tokens.preflight import Preflight
from helpers import API_KEY, OTHER_KEY, Gateway, Sim, wait_recorded, write_config

ENV = {"TEST_UPSTREAM_KEY": "upstream-secret-123", "TEST_GLOBEX_KEY": OTHER_KEY}


def decisions_of(row: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in orjson.loads(row["airlock.decisions"])}


def test_every_call_records_its_route_and_guard_verdicts(tmp_path: Path, sims: dict[str, Sim]) -> None:
    gw = Gateway(write_config(tmp_path, sims, model_extra={"context_window": 100_000}))
    try:
        auth = {"Authorization": f"Bearer {API_KEY}"}
        body = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}
        r = httpx.post(f"{gw.url}/v1/chat/completions", headers=auth, json=body)
        assert r.status_code == 200
        direct = httpx.post(f"{gw.url}/v1/chat/completions", headers=auth, json={**body, "model": "sim-small"})
        assert direct.status_code == 200
        rows = wait_recorded(gw.data_dir, 2)
        by_id = {row["request_id"]: decisions_of(row) for row in rows}
        alias, small = by_id[r.headers["x-request-id"]], by_id[direct.headers["x-request-id"]]
        assert list(alias) == ["route", "preflight"]  # the route first, then each guard in order
        assert alias["route"]["route"] == "chat" and "alias 'chat' in routes" in alias["route"]["reason"]
        assert "failover" in alias["route"]["reason"]
        assert alias["preflight"]["outcome"] == "allow" and alias["preflight"]["reason"].startswith("fits")
        assert alias["preflight"]["policy"] == "tokens.preflight.mode=reject"
        assert "served directly by" in small["route"]["reason"]
        assert small["preflight"]["reason"] == "not checked: no context window or tokenizer"
    finally:
        gw.stop()


class BlockTenant:
    """A guard written outside the gateway, as the coming ones (residency, limits, budgets) will be."""

    name = "block"

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant

    async def check(self, call: GuardedCall) -> Verdict:
        if call.tenant == self.tenant:
            why = f"tenant {self.tenant} may not call {call.route.name}"
            return Verdict(self.name, "deny", why, "test.block", error=Forbidden(why))
        return Verdict(self.name, "allow", "not blocked", "test.block")


async def _serve_and_call(app: web.Application, calls: list[tuple[str, dict[str, Any]]]) -> list[httpx.Response]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            return [await client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body)
                    for key, body in calls]  # fmt: skip
    finally:
        await runner.cleanup()


def test_a_new_guard_plugs_in_and_its_deny_stops_the_call_before_the_upstream(
    tmp_path: Path, sims: dict[str, Sim]
) -> None:
    config = load_config(write_config(tmp_path, {"sim-eu": sims["sim-eu"]}))
    stores = build_stores(config)
    preflight = Preflight(config)
    guards = GuardChain([*model_guards(config, preflight).guards, BlockTenant("globex")])
    app = build_app(build_state(config, stores, guards, ENV), surfaces(config, stores, preflight))
    before = sims["sim-eu"].stats()
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    ok, blocked = asyncio.run(_serve_and_call(app, [(API_KEY, body), (OTHER_KEY, body)]))
    assert ok.status_code == 200
    assert blocked.status_code == 403 and blocked.headers["content-type"].startswith("application/problem+json")
    assert blocked.json()["detail"] == "tenant globex may not call chat"
    after = sims["sim-eu"].stats()
    assert after["requests"] - before["requests"] == 1  # the denied call never left the gateway
    rows = wait_recorded(Path(config.data_dir), 2)
    denied = next(r for r in rows if r["request_id"] == blocked.headers["x-request-id"])
    assert denied["status"] == "error" and denied["http_status"] == 403
    verdicts = decisions_of(denied)
    assert list(verdicts) == ["route", "preflight", "block"]
    assert verdicts["block"]["outcome"] == "deny" and verdicts["block"]["policy"] == "test.block"


def test_build_gateway_refuses_an_unusable_data_directory(tmp_path: Path, sims: dict[str, Sim]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    config = load_config(write_config(tmp_path, sims, data_dir=str(blocker / "data")))
    with pytest.raises(StoreUnavailable, match="not usable"):
        build_gateway(config, ENV)
