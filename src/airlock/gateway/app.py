"""Building a gateway worker: its state, its routes, and its lifecycle."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from typing import Any

import duckdb
import orjson
from aiohttp import web

from airlock.config.schema import Config
from airlock.energy.http import add_energy_routes
from airlock.errors import MethodNotAllowed, NotFound
from airlock.gateway.auth import Authenticator
from airlock.gateway.boundary import error_boundary
from airlock.gateway.egress import EgressClient
from airlock.gateway.forward import Forwarder
from airlock.gateway.handlers import CHAT, COMPLETIONS, EMBEDDINGS, model_handler
from airlock.gateway.metrics import GatewayMetrics, render, worker_statuses
from airlock.gateway.routing import Router
from airlock.gateway.state import GatewayState
from airlock.ledger.http import add_ledger_routes
from airlock.record.link import RecorderLink
from airlock.sampling.service import run_sampler
from airlock.store.embedded import DataDir, DuckDBSpanReader, SQLiteState
from airlock.telemetry import install as install_telemetry
from airlock.tokens.preflight import Preflight

STATE_KEY = web.AppKey("airlock_state", GatewayState)
CALIBRATION_KEY = web.AppKey("airlock_calibration", asyncio.Task)
SAMPLER_KEY = web.AppKey("airlock_sampler", asyncio.Task)
log = logging.getLogger("airlock.gateway")


def new_writer_id(node: str) -> str:
    return f"{re.sub(r'[^A-Za-z0-9-]', '-', node)}_{os.getpid()}_{os.urandom(3).hex()}"


def build_state(config: Config, environ: dict[str, str] | None = None) -> GatewayState:
    data = DataDir.at(config.data_dir)
    data.create()
    writer_id = new_writer_id(config.node.name)
    state_db = SQLiteState(data.state_db)
    state_db.conn.execute(
        "INSERT INTO writers(writer_id, node, region, pid) VALUES (?, ?, ?, ?)",
        (writer_id, config.node.name, config.node.region, os.getpid()),
    )
    state_db.close()
    stamp = {"airlock.node": config.node.name, "airlock.node.region": config.node.region}
    recorder = RecorderLink(config, data, writer_id, stamp)  # its writer process starts with the app
    metrics = GatewayMetrics()
    egress = EgressClient([u.base_url for u in config.upstreams], config.server.upstream_pool_size)
    return GatewayState(
        config=config,
        recorder=recorder,
        router=Router(config, environ),
        auth=Authenticator(config, environ),
        egress=egress,
        metrics=metrics,
        forwarder=Forwarder(egress, metrics, config.node.name),
        preflight=Preflight(config),
    )


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")


def build_app(state: GatewayState) -> web.Application:
    app = web.Application(client_max_size=state.config.server.max_body_bytes, middlewares=[error_boundary])
    app[STATE_KEY] = state
    known_paths = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/healthz", "/metrics"}
    known_paths.add("/v1/traces")

    async def models(request: web.Request) -> web.Response:
        state.auth.tenant_for(request.headers.get("Authorization"))
        listing = [{"id": name, "object": "model", "owned_by": "airlock"} for name in state.router.names()]
        return _json({"object": "list", "data": listing})

    async def healthz(request: web.Request) -> web.Response:
        rec = state.recorder
        healthy = rec.error is None
        return _json(
            {
                "status": "ok" if healthy else "degraded",
                "accepting": rec.accepting,
                "recorder_error": rec.error,
                "queue_depth": rec.queue_depth,
            },
            status=200 if rec.accepting else 503,
        )

    async def metrics(request: web.Request) -> web.Response:
        own = state.recorder.writer_id
        others = [s for s in worker_statuses(state.recorder.data.run) if s.get("writer_id") != own]
        mine = {**state.recorder.stats(), **state.metrics.snapshot()}
        return web.Response(text=render([mine, *others]), content_type="text/plain", charset="utf-8")

    async def fallback(request: web.Request) -> web.Response:
        if request.path in known_paths:
            raise MethodNotAllowed(f"{request.method} is not allowed on {request.path}")
        raise NotFound(f"no endpoint at {request.path}")

    app.router.add_post("/v1/chat/completions", model_handler(state, CHAT))
    app.router.add_post("/v1/completions", model_handler(state, COMPLETIONS))
    app.router.add_post("/v1/embeddings", model_handler(state, EMBEDDINGS))
    app.router.add_get("/v1/models", models)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    add_ledger_routes(app, state)
    add_energy_routes(app, state)
    install_telemetry(app, state)  # POST /v1/traces (OTLP in) and the OTLP exporter
    app.router.add_route("*", "/{tail:.*}", fallback)

    async def calibrate() -> None:
        """Keep the pre-flight margins current from the record, off the event loop."""
        reader = DuckDBSpanReader(state.recorder.data)
        while True:
            try:
                await asyncio.to_thread(state.preflight.calibration.refresh, reader)
            except (duckdb.Error, OSError) as e:
                log.warning("pre-flight calibration not refreshed: %s", e)
            await asyncio.sleep(state.config.tokens.preflight.calibrate_every_s)

    async def on_startup(app: web.Application) -> None:
        await state.recorder.start(status_source=state.metrics.snapshot)
        if state.config.tokens.preflight.mode != "off":
            app[CALIBRATION_KEY] = asyncio.get_running_loop().create_task(calibrate())
        if state.config.sampling.enabled:  # tail sampling over the written record, in one worker
            app[SAMPLER_KEY] = asyncio.get_running_loop().create_task(run_sampler(state.config, state.recorder.data))

    async def on_cleanup(app: web.Application) -> None:
        task = app.get(CALIBRATION_KEY)
        if task is not None:
            task.cancel()
        sampler = app.get(SAMPLER_KEY)
        if sampler is not None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        await state.egress.close()
        await state.recorder.close()  # the writer process writes out everything it holds, then exits

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
