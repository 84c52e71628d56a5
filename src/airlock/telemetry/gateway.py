"""What the telemetry capability adds to a gateway worker: the OTLP receiver's route and, when
configured, the exporter's background task."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:  # the gateway imports this module while it is itself being imported
    from airlock.gateway.state import GatewayState
    from airlock.telemetry.exporter import OtlpExporter

TRACES_PATH = "/v1/traces"
EXPORTER_KEY: web.AppKey[OtlpExporter] = web.AppKey("airlock_otlp_exporter")
EXPORT_TASK_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("airlock_otlp_export_task")


def install(app: web.Application, state: GatewayState) -> None:
    """Register POST /v1/traces and start/stop the exporter with the app. Call before any catch-all route."""
    from airlock.telemetry.exporter import OtlpExporter
    from airlock.telemetry.receiver import otlp_traces_handler

    telemetry = state.config.telemetry
    if telemetry.otlp_receiver.enabled:
        app.router.add_post(TRACES_PATH, otlp_traces_handler(state))
    if telemetry.otlp_export is None:
        return
    export_cfg = telemetry.otlp_export

    async def start(app: web.Application) -> None:
        exporter = OtlpExporter(export_cfg, state.stores, state.metrics.otlp)
        app[EXPORTER_KEY] = exporter
        app[EXPORT_TASK_KEY] = asyncio.get_running_loop().create_task(exporter.run())

    async def stop(app: web.Application) -> None:
        task = app.get(EXPORT_TASK_KEY)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        exporter = app.get(EXPORTER_KEY)
        if exporter is not None:
            await exporter.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
