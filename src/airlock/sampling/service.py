"""Running the sampler: the lock that makes one process per data directory run it, and the gateway's
background loop (a pass every `sampling.interval_s`, in a thread, off the request path)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from airlock.config.schema import Config
from airlock.errors import StoreError
from airlock.sampling.stage import PassResult, SamplingPass
from airlock.store.embedded.layout import DataDir
from airlock.store.embedded.sampling import embedded_sampling_stores
from airlock.store.sampling import SamplerLock, SamplingStores

log = logging.getLogger("airlock.sampling")


def take_sampler_lock(data: DataDir, stores: SamplingStores | None = None) -> SamplerLock | None:
    """The lock held while a process runs passes on this record; None if another holds it."""
    return (stores or embedded_sampling_stores(data)).take_lock()


async def run_sampler(config: Config, data: DataDir, stores: SamplingStores | None = None) -> None:
    """Until cancelled: whichever gateway worker takes the lock runs a pass every interval. A pass in
    flight when cancelled is finished before the lock is let go, so two passes never overlap."""
    stores = stores or embedded_sampling_stores(data)
    lock: SamplerLock | None = None
    stage: SamplingPass | None = None
    running: asyncio.Future[PassResult] | None = None
    try:
        while True:
            if lock is None:
                try:
                    lock = stores.take_lock()
                except StoreError as e:
                    log.warning("cannot take the sampler lock (will retry): %s", e)
            if lock is not None:
                stage = stage or SamplingPass(config, data, stores=stores)
                pass_in_flight = asyncio.ensure_future(asyncio.to_thread(stage.run))
                running = pass_in_flight
                try:
                    await asyncio.shield(pass_in_flight)  # a cancel must not orphan the thread's pass
                except StoreError as e:
                    log.warning("sampler pass failed (will retry): %s", e)
                    stage = None  # the next pass starts again from what the state database holds
                except Exception:  # a defect must not end sampling (and, with it, every compaction)
                    log.exception("sampler pass failed (will retry)")
                    stage = None
                running = None
            await asyncio.sleep(config.sampling.interval_s)
    finally:
        if running is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await running
        if lock is not None:
            lock.release()
