"""`airlock serve`: one worker process per core on one port (SO_REUSEPORT), each with its own
recorder writing its own segments."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing as mp
import signal
import sys

from aiohttp import web

from airlock.config.schema import Config
from airlock.gateway.app import build_app, build_state

log = logging.getLogger("airlock.gateway")


async def _serve(config: Config, reuse_port: bool, ready: mp.synchronize.Event | None = None) -> None:
    state = build_state(config)
    app = build_app(state)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.server.host, config.server.port, reuse_port=reuse_port, backlog=2048)
    await site.start()
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
        await runner.cleanup()


def run_worker(config: Config, reuse_port: bool, ready: mp.synchronize.Event | None = None) -> None:
    import uvloop

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # The batch writer thread shares the GIL with the event loop; a short switch interval keeps a
    # writer burst from stalling requests for the default 5 ms.
    sys.setswitchinterval(0.0005)
    uvloop.run(_serve(config, reuse_port, ready))


def serve(config: Config, workers: int | None = None) -> int:
    n = workers or config.server.workers
    where = f"http://{config.server.host}:{config.server.port}"
    if n == 1:
        print(f"airlock: serving on {where} (1 worker), recording to {config.data_dir}", flush=True)
        run_worker(config, reuse_port=False)
        return 0
    if config.server.port == 0:
        print("airlock: --workers needs a fixed port, not 0", file=sys.stderr)
        return 2
    ctx = mp.get_context("spawn")
    procs = []
    for _ in range(n):
        ready = ctx.Event()
        p = ctx.Process(target=run_worker, args=(config, True, ready), daemon=False)
        p.start()
        procs.append((p, ready))
    for p, ready in procs:
        if not ready.wait(30):
            print(f"airlock: worker {p.pid} did not start", file=sys.stderr)
    print(f"airlock: serving on {where} ({n} workers), recording to {config.data_dir}", flush=True)

    def forward(signum: int, _frame: object) -> None:
        for p, _ in procs:
            if p.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    for p, _ in procs:
        p.join()
        code = code or (p.exitcode or 0)
    return code
