"""The composition root: the one place that turns a validated config into a running gateway worker.

It opens the stores (`build_stores`, the backend the config's `store:` section names), chooses the
model call's guards in order, builds the gateway's state, and adds each capability's HTTP surface and
background work to the app. Nothing below this module chooses a backend or wires one capability to
another: the gateway knows nothing of the ledger, energy, telemetry, sampling or tokens beyond the
`Surface` and `Guard` shapes they are handed in."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from airlock.config.schema import Config
from airlock.energy.http import add_energy_routes
from airlock.errors import AirlockError
from airlock.gateway.app import STATE_KEY, Surface, build_app, build_state
from airlock.gateway.state import GatewayState
from airlock.guards import Guard, GuardChain
from airlock.ledger.http import add_ledger_routes
from airlock.limits import LimitGuard
from airlock.sampling.service import run_sampler
from airlock.store import Stores, build_stores
from airlock.store.fail_policy import FailPolicy
from airlock.telemetry import install as install_telemetry
from airlock.tokens.guard import PreflightGuard
from airlock.tokens.preflight import Preflight

log = logging.getLogger("airlock.gateway")

__all__ = ["build_gateway", "gateway_state", "model_guards", "surfaces"]


def model_guards(config: Config, preflight: Preflight, stores: Stores | None = None) -> GuardChain:
    """The guards every model call passes, in order. Pre-flight comes first: it may shrink the body that
    later guards (residency, prompts, limits, budgets) look at. Limits need the stores (their buckets
    are shared by every worker and replica)."""
    guards: list[Guard] = [PreflightGuard(preflight)]
    if config.limits:
        if stores is None:
            raise ValueError("limits are configured: model_guards needs the stores their buckets live in")
        policy = FailPolicy(stores.limits_fail)
        guards.append(LimitGuard(config.limits, policy.buckets(stores.open_limits())))
    return GuardChain(guards)


def _background(name: str, work: Callable[[], Awaitable[None]]) -> Surface:
    """A surface that runs one coroutine function for the app's life and cancels it at shutdown."""
    key = web.AppKey(f"airlock_{name}", asyncio.Task)

    def add(app: web.Application, state: GatewayState) -> None:
        async def start(app: web.Application) -> None:
            app[key] = asyncio.get_running_loop().create_task(work(), name=name)  # type: ignore[arg-type]

        async def stop(app: web.Application) -> None:
            task = app.get(key)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        app.on_startup.append(start)
        app.on_cleanup.append(stop)

    return add


def _calibration(config: Config, preflight: Preflight, stores: Stores) -> Surface:
    """Keep the pre-flight margins current from the record, off the event loop."""

    async def calibrate() -> None:
        while True:
            try:
                await asyncio.to_thread(preflight.calibration.refresh, stores.drift)
            except (AirlockError, OSError) as e:
                log.warning("pre-flight calibration not refreshed: %s", e)
            await asyncio.sleep(config.tokens.preflight.calibrate_every_s)

    return _background("calibration", calibrate)


def _sampler(config: Config, stores: Stores) -> Surface:
    """Tail sampling over the written record (one worker runs it; it takes a lock)."""

    async def sample() -> None:
        await run_sampler(config, stores.data, stores.sampling)

    return _background("sampler", sample)


def surfaces(config: Config, stores: Stores, preflight: Preflight) -> list[Surface]:
    out: list[Surface] = [add_ledger_routes, add_energy_routes, install_telemetry]
    if config.tokens.preflight.mode != "off":
        out.append(_calibration(config, preflight, stores))
    if config.sampling.enabled:
        out.append(_sampler(config, stores))
    return out


def build_gateway(config: Config, environ: dict[str, str] | None = None) -> web.Application:
    """One worker's app, ready for an AppRunner; its state is `app[STATE_KEY]`. Raises StoreError when a
    store cannot be opened."""
    stores = build_stores(config, serving=True)
    preflight = Preflight(config)
    state = build_state(config, stores, model_guards(config, preflight, stores), environ)
    return build_app(state, surfaces(config, stores, preflight))


def gateway_state(app: web.Application) -> GatewayState:
    return app[STATE_KEY]
