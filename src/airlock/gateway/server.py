"""`airlock serve`: one worker process per core on one port (SO_REUSEPORT), each with its own
recorder writing its own segments, under a supervisor (gateway/supervisor.py) that replaces a worker
that dies; the address is claimed first, so that no second serve shares it (gateway/address.py)."""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing as mp
import signal
import sys

from aiohttp import web

from airlock.compose import build_gateway
from airlock.config.schema import Config
from airlock.errors import AddressInUse, RecorderStartError, StoreError
from airlock.gateway.address import claim_address
from airlock.gateway.protocol import ClientTimeouts, GuardedAppRunner
from airlock.gateway.supervisor import Supervisor
from airlock.store import build_stores
from airlock.store.embedded import DataDir

log = logging.getLogger("airlock.gateway")


async def _serve(config: Config, reuse_port: bool, announce: bool, ready: mp.synchronize.Event | None) -> int:
    try:
        app = build_gateway(config)
    except StoreError as e:
        print(f"airlock: {e.detail}", file=sys.stderr, flush=True)
        return 2
    runner = GuardedAppRunner(
        app,
        timeouts=ClientTimeouts(headers_s=config.server.headers_timeout_s, body_s=config.server.body_timeout_s),
        keepalive_timeout=config.server.idle_timeout_s,
        handler_cancellation=True,
        access_log=None,
    )
    try:
        await runner.setup()  # starts the worker's writer process, which first recovers earlier runs
    except RecorderStartError as e:
        print(f"airlock: the recorder could not start: {e}", file=sys.stderr, flush=True)
        return 2
    site = web.TCPSite(runner, config.server.host, config.server.port, reuse_port=reuse_port, backlog=2048)
    try:
        await site.start()
    except OSError as e:
        print(
            f"airlock: cannot listen on {config.server.host}:{config.server.port}: {e.strerror or e}",
            file=sys.stderr,
            flush=True,
        )
        await runner.cleanup()
        return 1
    if announce:
        print(
            f"airlock: serving on http://{config.server.host}:{config.server.port} (1 worker), "
            f"recording to {config.data_dir}",
            flush=True,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Everything built at start-up lives for the whole run: keep it out of the collector's way, and
    # collect the young generation less often (each request allocates many short-lived objects).
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()  # stops the writer, which flushes the open segment
    return 0


def run_worker(
    config: Config, reuse_port: bool, announce: bool = False, ready: mp.synchronize.Event | None = None
) -> int:
    import uvloop

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # Background threads (counting a large prompt for the pre-flight check, the ledger's SQLite) share
    # the GIL with the event loop; a short switch interval keeps one from stalling requests for 5 ms.
    sys.setswitchinterval(0.0005)
    return uvloop.run(_serve(config, reuse_port, announce, ready))


def _worker_main(config: Config, ready: mp.synchronize.Event) -> None:
    sys.exit(run_worker(config, reuse_port=True, ready=ready))


def serve(config: Config, workers: int | None = None) -> int:
    n = workers or config.server.workers
    host, port = config.server.host, config.server.port
    if n > 1 and port == 0:
        print("airlock: --workers needs a fixed port, not 0", file=sys.stderr)
        return 2
    claim = None
    if port != 0:
        try:
            claim = claim_address(host, port)  # before any worker listens: one serve per address
        except AddressInUse as e:
            print(f"airlock: {e.detail}", file=sys.stderr, flush=True)
            return 1
    try:
        try:  # every backend the store: section names is reached (and migrated) before any worker starts
            build_stores(config, serving=True)
        except StoreError as e:
            print(f"airlock: cannot start: {e.detail}", file=sys.stderr, flush=True)
            return 2
        if n == 1:
            return run_worker(config, reuse_port=False, announce=True)
        supervisor = Supervisor(_worker_main, config, n, DataDir.at(config.data_dir).run)
        code = supervisor.start_all()
        if code != 0:
            return code
        print(
            f"airlock: serving on http://{host}:{port} ({n} workers), recording to {config.data_dir}",
            flush=True,
        )
        return supervisor.run()
    finally:
        if claim is not None:
            claim.release()
