"""Running the sampler: the lock that makes one process per data directory run it, and the gateway's
background loop (a pass every `sampling.interval_s`, in a thread, off the request path)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os

from airlock.config.schema import Config
from airlock.errors import StoreError
from airlock.sampling.stage import PassResult, SamplingPass
from airlock.store.embedded.layout import DataDir

log = logging.getLogger("airlock.sampling")


def take_sampler_lock(data: DataDir) -> int | None:
    """An exclusive lock on run/sampler.lock, held while a process runs passes; None if another holds it."""
    data.run.mkdir(parents=True, exist_ok=True)
    fd = os.open(data.run / "sampler.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


async def run_sampler(config: Config, data: DataDir) -> None:
    """Until cancelled: whichever gateway worker takes the lock runs a pass every interval. A pass in
    flight when cancelled is finished before the lock is let go, so two passes never overlap."""
    fd: int | None = None
    stage: SamplingPass | None = None
    running: asyncio.Future[PassResult] | None = None
    try:
        while True:
            if fd is None:
                fd = take_sampler_lock(data)
            if fd is not None:
                stage = stage or SamplingPass(config, data)
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
        if fd is not None:
            os.close(fd)
