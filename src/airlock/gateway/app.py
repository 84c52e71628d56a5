"""A gateway worker's state, its own routes, and its lifecycle. It knows nothing of the analyses built
on the record: their HTTP surfaces and background work come in as `Surface`s from airlock.compose."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from aiohttp import web

from airlock.config.schema import Config
from airlock.errors import MethodNotAllowed, NotFound
from airlock.gateway.auth import Authenticator
from airlock.gateway.boundary import error_boundary
from airlock.gateway.egress import EgressClient
from airlock.gateway.forward import Forwarder
from airlock.gateway.handlers import CHAT, COMPLETIONS, EMBEDDINGS, model_handler
from airlock.gateway.metrics import GatewayMetrics, render, worker_statuses
from airlock.gateway.routing import Router
from airlock.gateway.state import GatewayState
from airlock.gateway.supervisor import worker_health
from airlock.guards import GuardChain
from airlock.record.link import RecorderLink
from airlock.store import Stores

STATE_KEY = web.AppKey("airlock_state", GatewayState)
log = logging.getLogger("airlock.gateway")


def new_writer_id(node: str) -> str:
    return f"{re.sub(r'[^A-Za-z0-9-]', '-', node)}_{os.getpid()}_{os.urandom(3).hex()}"


def build_state(
    config: Config, stores: Stores, guards: GuardChain, environ: dict[str, str] | None = None
) -> GatewayState:
    """A worker's gateway, on stores already opened and guards already chosen (by airlock.compose)."""
    writer_id = new_writer_id(config.node.name)
    stores.writers.register_writer(writer_id, config.node.name, config.node.region, os.getpid())
    stamp = {"airlock.node": config.node.name, "airlock.node.region": config.node.region}
    recorder = RecorderLink(config, stores.data, writer_id, stamp)  # its writer process starts with the app
    metrics = GatewayMetrics()
    egress = EgressClient([u.base_url for u in config.upstreams], config.server.upstream_pool_size)
    return GatewayState(
        config=config,
        stores=stores,
        recorder=recorder,
        router=Router(config, environ),
        auth=Authenticator(config, environ),
        egress=egress,
        metrics=metrics,
        forwarder=Forwarder(egress, metrics, config.node.name),
        guards=guards,
    )


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")


# What a capability adds to a worker's app: its routes, and start/stop hooks for its background work.
Surface = Callable[[web.Application, GatewayState], None]


def build_app(state: GatewayState, surfaces: Sequence[Surface] = ()) -> web.Application:
    """The gateway's own endpoints (model API, models, health, metrics), then each surface's, then the
    catch-all that answers 404/405 as problem+json."""
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
                **worker_health(rec.data.run),  # under `serve --workers N`: workers alive, restarts, last exit
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
    # The recorder starts before any surface's background work and stops after all of it.
    app.on_startup.append(lambda app: state.recorder.start(status_source=state.metrics.snapshot))
    for add_surface in surfaces:
        add_surface(app, state)
    app.router.add_route("*", "/{tail:.*}", fallback)

    async def on_cleanup(app: web.Application) -> None:
        await state.egress.close()
        await state.recorder.close()  # the writer process writes out everything it holds, then exits

    app.on_cleanup.append(on_cleanup)
    return app
