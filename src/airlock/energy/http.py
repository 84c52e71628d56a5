"""POST /v1/energy/readings: GPU energy counter readings pushed by an external agent (e.g. a DCGM or
NVML exporter on the GPU host), for devices named under energy.gpus. Same bearer keys as the model API."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import orjson
from aiohttp import web
from pydantic import ValidationError

from airlock.energy.readings import EnergyReadings, Reading, ReadingConflict, ReadingsIn
from airlock.errors import Conflict, MethodNotAllowed, Unprocessable
from airlock.gateway.state import GatewayState
from airlock.ledger.http import read_json_object, validation_problem

READINGS_PATH = "/v1/energy/readings"


class ReadingsEndpoint:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.devices = {g.device for g in state.config.energy.gpus}
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="energy-readings")
        self.store: EnergyReadings | None = None

    def _add(self, readings: list[Reading]) -> int:
        if self.store is None:
            self.store = EnergyReadings(self.state.recorder.data.state_db)
        return self.store.add(readings, "push")

    async def post(self, request: web.Request) -> web.Response:
        self.state.auth.tenant_for(request.headers.get("Authorization"))
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


async def not_allowed(request: web.Request) -> web.Response:
    raise MethodNotAllowed(f"{request.method} is not allowed on {request.path}; POST readings there")


def add_energy_routes(app: web.Application, state: GatewayState) -> None:
    endpoint = ReadingsEndpoint(state)
    app.router.add_post(READINGS_PATH, endpoint.post)
    app.router.add_route("*", READINGS_PATH, not_allowed)
    app.on_cleanup.append(endpoint.close)
