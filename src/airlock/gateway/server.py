"""`airlock serve`: one worker process per core on one port (SO_REUSEPORT), each with its own
recorder writing its own segments."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing as mp
import signal
import sqlite3
import sys

from aiohttp import web

from airlock.config.schema import Config
from airlock.gateway.app import build_app, build_state
from airlock.gateway.protocol import ClientTimeouts, GuardedAppRunner
from airlock.record.link import RecorderStartError

log = logging.getLogger("airlock.gateway")


async def _serve(config: Config, reuse_port: bool, announce: bool, ready: mp.synchronize.Event | None) -> int:
    try:
        state = build_state(config)
    except (OSError, sqlite3.Error) as e:
        print(f"airlock: the data directory {config.data_dir} is not usable: {e}", file=sys.stderr, flush=True)
        return 2
    runner = GuardedAppRunner(
        build_app(state),
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
    if n == 1:
        return run_worker(config, reuse_port=False, announce=True)
    if config.server.port == 0:
        print("airlock: --workers needs a fixed port, not 0", file=sys.stderr)
        return 2
    ctx = mp.get_context("spawn")
    procs = []
    for _ in range(n):
        ready = ctx.Event()
        p = ctx.Process(target=_worker_main, args=(config, ready), daemon=False)
        p.start()
        procs.append((p, ready))

    def forward(signum: int, _frame: object) -> None:
        for p, _ in procs:
            if p.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for p, ready in procs:
        while not ready.wait(0.1):
            if not p.is_alive():  # a worker that could not start takes the others down with it
                forward(signal.SIGTERM, None)
                for q, _ in procs:
                    q.join()
                return p.exitcode or 1
    print(
        f"airlock: serving on http://{config.server.host}:{config.server.port} ({n} workers), "
        f"recording to {config.data_dir}",
        flush=True,
    )
    code = 0
    for p, _ in procs:
        p.join()
        code = code or (p.exitcode or 0)
    return code
