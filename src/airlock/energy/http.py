"""POST /v1/energy/readings: GPU energy counter readings pushed by an external agent (e.g. a DCGM or
NVML exporter on the GPU host), for devices named under energy.gpus. Readings are node-level, so they
change every tenant's energy report: only a key listed under energy.readings_keys may push them (no
tenant's model API key may; such a key gets 403, no or an unknown key 401)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from concurrent.futures import ThreadPoolExecutor

import orjson
from aiohttp import web
from pydantic import ValidationError

from airlock.config.schema import ReadingsKey
from airlock.energy.readings import EnergyReadingRepository, Reading, ReadingConflict, ReadingsIn
from airlock.errors import Conflict, Forbidden, MethodNotAllowed, Unprocessable
from airlock.gateway.state import GatewayState
from airlock.ledger.http import read_json_object, validation_problem

READINGS_PATH = "/v1/energy/readings"


class ReadingsAuth:
    """Checks a request's bearer key against energy.readings_keys (held as sha256 digests)."""

    def __init__(self, keys: list[ReadingsKey], state: GatewayState, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.state = state
        self.digests: list[str] = []
        for key in keys:
            if key.key_sha256:
                self.digests.append(key.key_sha256)
            elif key.key_env and env.get(key.key_env):
                self.digests.append(hashlib.sha256(env[key.key_env].encode()).hexdigest())

    def check(self, authorization: str | None) -> None:
        """Return if the header carries a readings key; raise Unauthorized for no or an unknown key and
        Forbidden for a tenant's model API key."""
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip()
        if key and scheme.lower() == "bearer" and key.isascii() and key.isprintable():
            digest = hashlib.sha256(key.encode()).hexdigest()
            if any(hmac.compare_digest(known, digest) for known in self.digests):
                return
        self.state.auth.tenant_for(authorization)  # raises Unauthorized unless it is a tenant's key
        raise Forbidden(
            "a tenant's API key may not push energy readings (they are node-level and change every "
            "tenant's energy report); give the pushing agent a key under energy.readings_keys"
        )


class ReadingsEndpoint:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.auth = ReadingsAuth(state.config.energy.readings_keys, state)
        self.devices = {g.device for g in state.config.energy.gpus}
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="energy-readings")
        self.store: EnergyReadingRepository | None = None

    def _add(self, readings: list[Reading]) -> int:
        if self.store is None:
            self.store = self.state.stores.open_energy_readings()
        return self.store.add(readings, "push")

    async def post(self, request: web.Request) -> web.Response:
        self.auth.check(request.headers.get("Authorization"))
        doc = await read_json_object(request, self.state.config.server.max_body_bytes)
        try:
            parsed = ReadingsIn.model_validate(doc)
        except ValidationError as e:
            raise validation_problem(e) from None
        unknown = sorted({r.device for r in parsed.readings} - self.devices)
        if unknown:
            raise Unprocessable(
                f"unknown device(s) {unknown}: declare them under energy.gpus with the upstream they serve",
                devices=unknown,
            )
        readings = [Reading(r.device, r.t_ns, r.energy_mj) for r in parsed.readings]
        try:
            new = await asyncio.get_running_loop().run_in_executor(self.pool, self._add, readings)
        except ReadingConflict as e:
            raise Conflict(f"a different reading for {e} was stored before; nothing was stored") from None
        body = {"accepted": len(readings), "new": new}
        return web.Response(body=orjson.dumps(body), status=201 if new else 200, content_type="application/json")

    async def close(self, app: web.Application) -> None:
        self.pool.shutdown(wait=True)
        if self.store is not None:
            self.store.close()

    async def not_allowed(self, request: web.Request) -> web.Response:
        """Any other method: 405 for a readings key, and the same 401/403 as POST for any other."""
        self.auth.check(request.headers.get("Authorization"))
        raise MethodNotAllowed(f"{request.method} is not allowed on {request.path}; POST readings there")


def add_energy_routes(app: web.Application, state: GatewayState) -> None:
    endpoint = ReadingsEndpoint(state)
    app.router.add_post(READINGS_PATH, endpoint.post)
    app.router.add_route("*", READINGS_PATH, endpoint.not_allowed)
    app.on_cleanup.append(endpoint.close)
