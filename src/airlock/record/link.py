"""The request path's side of the recorder: hands records to the worker's writer process.

`submit` puts a record in a buffer that goes over a socket pair, pickled as one batch, every couple of
milliseconds (at once in durable mode, or when a long stream's record is waiting); the writer process
(`process.py`) does everything else.
The gateway never waits on disk: its backlog (records handed over and not yet in the write-ahead
file) is bounded by `recorder.queue_size`, and a record that would exceed it goes to the spill file,
which the writer replays once it has caught up. Nothing is dropped silently: a failed spill, or
records the writer process took with it when it died, are counted as dropped with the reason, in
memory and in this worker's loss file (`losses.py`, reserved at start), and logged at shutdown.

Its public face is the one the gateway used with the in-process recorder: `submit`, `accepting`,
`error`, `stats()`, `queue_depth`, plus `start` and `close`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from airlock.config.schema import Config
from airlock.errors import RecorderStartError
from airlock.record import scheduling, wire
from airlock.record.losses import LossFile, loss_path
from airlock.record.recorder import Spill, spill_record
from airlock.store.embedded.layout import DataDir

log = logging.getLogger("airlock.recorder")

LINGER_S = 0.002  # how long records gather before one write to the socket (durable mode: none)
# The writer's counts that add up across the writer processes of one worker (a respawn starts at 0).
_CUMULATIVE = ("written", "segments_written", "compactions", "recovered", "writer_spilled", "writer_dropped")
FLUSH_BYTES = 64 * 1024  # ... unless this much is waiting
STATUS_EVERY_S = 1.0


def _mark_stopped(data: DataDir, writer_id: str) -> None:
    """A dead writer's status file says so, so that /metrics and `airlock status` stop counting it as live."""
    path = data.run / f"{writer_id}.json"
    try:
        status = orjson.loads(path.read_bytes())
        status["stopped"] = True
        tmp = path.with_suffix(".json.tmp")
        tmp.write_bytes(orjson.dumps(status))
        os.replace(tmp, path)
    except (OSError, orjson.JSONDecodeError):
        pass


class _Protocol(asyncio.Protocol):
    def __init__(self, link: RecorderLink) -> None:
        self.link = link
        self.reader = wire.FrameReader()
        self.transport: asyncio.BaseTransport | None = None
        self.closed = asyncio.get_running_loop().create_future()  # done once the writer's last word is in

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # handed to the link once the writer says it is ready

    def data_received(self, data: bytes) -> None:
        for message in self.reader.feed(data):
            self.link._message(self, message)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self.link._writer_gone(self)


class RecorderLink:
    def __init__(self, config: Config, data: DataDir, writer_id: str, stamp: dict[str, Any] | None = None) -> None:
        self.config = config
        self.cfg = config.recorder
        self.data = data
        self.writer_id = writer_id
        self.stamp = stamp or {}
        self.spill = Spill(str(data.spill), writer_id, self.cfg.durable)
        self.accepted = 0
        self.spilled = 0
        self.dropped = 0
        self.drop_reasons: dict[str, int] = {}
        self.losses = LossFile(loss_path(data.run, writer_id, "gateway"), writer_id, writer_id, "gateway")
        self.writer_pid: int | None = None
        self._own_error: str | None = None  # the writer process is gone, or the spill failed
        self._own_error_since: float | None = None
        self._writer: dict[str, Any] = {}  # the writer's last counters
        self._buf: list[dict[str, Any]] = []  # records waiting for the next write to the socket
        self._buf_bytes = 0
        self._queued = 0  # records handed over (in the buffer or sent), ever
        self._done = 0  # of those, records the writer has in its write-ahead file
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()  # durable mode: (index, future)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.WriteTransport | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._status_handle: asyncio.TimerHandle | None = None
        self._status_source: Callable[[], dict[str, Any]] | None = None
        self._draining: str | None = None  # a spill file the writer is replaying
        self._closing = False
        self._protocol: _Protocol | None = None
        self._base_id = writer_id
        self._generation = 0  # writer processes respawned after one died
        self._done_base = 0  # records confirmed by earlier writer processes (DONE counts restart at 0)
        self._respawning: asyncio.Task[None] | None = None
        self._started = False
        self._writer_base = dict.fromkeys(_CUMULATIVE, 0)  # counts of writers that have died
        # The writer's scheduling (scheduling.py): idle, woken to catch up while its backlog is long, or nice only.
        self._idle = False  # under SCHED_IDLE now
        self._catching_up = False  # an idle writer switched to normal scheduling for now
        self._catch_up_from = max(1, self.cfg.queue_size // scheduling.CATCH_UP_FROM)
        self._rest_below = self.cfg.queue_size // scheduling.REST_BELOW
        self.catch_ups = 0
        self.idle_refused: str | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, status_source: Callable[[], dict[str, Any]] | None = None) -> None:
        """Start the writer process and wait until it has recovered earlier runs and is ready."""
        self._loop = asyncio.get_running_loop()
        self._status_source = status_source
        await self._spawn()
        try:  # the writer has made the data directory by now
            self.losses.reserve()
        except OSError as e:  # a full disk at start: the count stays in memory, each drop tries again
            log.error("the loss-count file %s could not be reserved: %s", self.losses.path, e.strerror or e)
        self._started = True
        self._send_status()  # and every second from now on

    async def _spawn(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "airlock.record.process", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        except OSError as e:
            ours.close()
            raise RecorderStartError(f"the writer process could not be started: {e}") from None
        finally:
            theirs.close()
        self._ready = loop.create_future()
        ours.setblocking(False)
        _, protocol = await loop.create_unix_connection(lambda: _Protocol(self), sock=ours)
        self._protocol = protocol
        start = {
            "config": self.config.model_dump(mode="json"),
            "writer_id": self.writer_id,
            "worker": self._base_id,
            "stamp": self.stamp,
        }
        protocol.transport.write(wire.frame(wire.START, start))  # type: ignore[union-attr]
        try:
            ready = await self._ready
        except BaseException:  # failed, or cancelled by shutdown: the writer sees its socket end and exits
            protocol.transport.close()  # type: ignore[union-attr]
            await loop.run_in_executor(None, self._proc.wait)
            raise
        self.writer_pid = int(ready["pid"])
        self._idle, self._catching_up = bool(ready.get("idle")), False
        self.idle_refused = ready.get("idle_refused")

    async def close(self, timeout: float = 150.0) -> None:
        """Hand over what is buffered, tell the writer to finish, and wait until it has written all."""
        self._closing = True
        if self._status_handle is not None:
            self._status_handle.cancel()
        if self._respawning is not None and not self._respawning.done():
            self._respawning.cancel()  # a writer cancelled mid-start is told to end, and reaped
            with contextlib.suppress(asyncio.CancelledError):
                await self._respawning
        if self._idle and self.writer_pid is not None:
            with contextlib.suppress(OSError):  # writing out what it holds must not wait for an idle moment
                scheduling.set_idle(self.writer_pid, False)
            self._idle = False
        if self._transport is not None:
            self._send_status()
            self._flush()
            with contextlib.suppress(OSError, RuntimeError):
                self._transport.write_eof()  # the writer reads to the end, writes it all, and exits
        if self._proc is not None:
            proc = self._proc
            try:
                await asyncio.get_running_loop().run_in_executor(None, proc.wait, timeout)
            except subprocess.TimeoutExpired:
                log.error("the writer process did not finish within %.0f s; stopping it", timeout)
                proc.kill()
                await asyncio.get_running_loop().run_in_executor(None, proc.wait)
                if self.queue_depth > 0:  # what it held unconfirmed (at most: its write-ahead file is replayed)
                    self.count_dropped(
                        self.queue_depth, "the writer process was stopped at shutdown before confirming them"
                    )
                    self._done = self._queued
            if self._protocol is not None:  # the writer's last counts (its drops at shutdown) arrive before its end
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._protocol.closed), 5.0)
        if self._transport is not None:
            self._transport.close()
        self._fail_waiting("the recorder closed")
        self.spill.close()
        stats = self.stats()
        if stats["dropped"]:
            reasons = "; ".join(f"{n} {reason}" for reason, n in sorted(stats["drop_reasons"].items()))
            log.error(
                "%d of %d records were not recorded (%s); counted in %s",
                stats["dropped"],
                self.accepted,
                reasons,
                self.data.run,
            )
        self.losses.close()

    # -- the request path ------------------------------------------------------------------------

    @property
    def error(self) -> str | None:
        return self._own_error or self._writer.get("error")

    @property
    def error_since(self) -> float | None:
        return self._own_error_since or self._writer.get("error_since")

    @property
    def accepting(self) -> bool:
        """False only when persistence is failing and policy says refuse unrecorded traffic."""
        return self.error is None or self.cfg.on_record_failure == "serve"

    @property
    def queue_depth(self) -> int:
        """Records handed over that the writer has not yet put in its write-ahead file."""
        return self._queued - self._done

    def submit(self, record: dict[str, Any]) -> asyncio.Future[None] | None:
        """Hand a record over. Never blocks; returns a future only in durable mode, done once the
        record is in the synced write-ahead file (or spill file)."""
        self.accepted += 1
        loop = self._loop
        fut = loop.create_future() if self.cfg.durable and loop is not None else None
        if self._transport is None or self._closing or self._queued - self._done >= self.cfg.queue_size:
            spill_record(self, record, fut)
            return fut
        self._buf.append(record)
        payloads = record.get("_payloads")
        if payloads:
            self._buf_bytes += sum(len(p) for p in payloads.values() if p is not None)
        self._queued += 1
        if self._idle and self._queued - self._done > self._catch_up_from:
            self._schedule_writer(idle=False)
        if fut is not None:
            self._waiting.append((self._queued, fut))
        if self._buf_bytes >= FLUSH_BYTES:
            # A long stream's record: hand it over now, so the writer reads it while the client is still
            # taking in the stream's end, not in the middle of the next request's first token.
            self._flush()
        elif self._flush_handle is None and loop is not None:
            self._flush_handle = loop.call_soon(self._flush) if fut else loop.call_later(LINGER_S, self._flush)
        return fut

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._buf and self._transport is not None:
            records, self._buf, self._buf_bytes = self._buf, [], 0
            try:
                self._transport.write(wire.records_frame(records))
            except (RuntimeError, OSError) as e:  # the socket is closing: keep them in the spill file instead
                log.warning("records not handed to the writer (%s); spilling them", e)
                self._spill_unsent(records)

    def _spill_unsent(self, records: list[dict[str, Any]]) -> None:
        """Records handed over in our count but never sent: into the spill file, each with its durable
        future (the newest waiting ones), and out of the backlog."""
        futures: list[asyncio.Future[None] | None] = [None] * len(records)
        first = self._queued - len(records) + 1
        while self._waiting and self._waiting[-1][0] >= first:
            index, fut = self._waiting.pop()
            futures[index - first] = fut
        self._queued -= len(records)
        for record, maybe in zip(records, futures, strict=True):
            spill_record(self, record, maybe)

    # -- what the writer says --------------------------------------------------------------------

    def _message(self, protocol: _Protocol, message: Any) -> None:
        if protocol is not self._protocol:
            return  # a writer that is no longer ours (cancelled mid-start)
        if not (isinstance(message, tuple) and len(message) == 2):
            log.error("unexpected message from the writer process: %r", message)
            return
        kind, body = message
        if kind == wire.DONE:
            self._done = self._done_base + body
            while self._waiting and self._waiting[0][0] <= self._done:
                fut = self._waiting.popleft()[1]
                if not fut.done():
                    fut.set_result(None)
            if self._catching_up and self.queue_depth < self._rest_below:
                self._schedule_writer(idle=True)
            self._maybe_drain()
        elif kind == wire.STATS:
            self._writer = {**body, **{k: self._writer_base[k] + body.get(k, 0) for k in _CUMULATIVE}}
        elif kind == wire.DRAINED:
            self.spill.release(body)
            self._draining = None
            self._maybe_drain()
        elif kind == wire.READY and self._ready is not None and not self._ready.done():
            self._transport = protocol.transport  # type: ignore[assignment]
            self._done_base = self._done  # this writer counts from 0
            self._ready.set_result(body)
        elif kind == wire.FAILED and self._ready is not None and not self._ready.done():
            self._ready.set_exception(RecorderStartError(str(body)))

    def _schedule_writer(self, idle: bool) -> None:
        """An idle writer whose backlog has grown long gets normal scheduling until it has caught up."""
        if self.writer_pid is None:
            return
        try:
            scheduling.set_idle(self.writer_pid, idle)
        except OSError as e:  # gone (the respawn takes over), or refused after all: stay at nice alone
            log.warning("could not change the writer process's scheduling: %s", e)
            self._idle = self._catching_up = False
            self.idle_refused = f"switching failed: {e.strerror or e}"
            return
        self._idle, self._catching_up = idle, not idle
        if not idle:
            self.catch_ups += 1
            log.info("the writer is %d records behind: normal scheduling until it catches up", self.queue_depth)

    @property
    def writer_scheduling(self) -> str:
        if self._idle:
            return "idle"
        if self._catching_up:
            return "catching up"
        return f"nice {self.cfg.writer_nice}"

    def _maybe_drain(self) -> None:
        """Once the writer has room again, hand it the spill file to replay."""
        if self._draining or self._closing or self._transport is None or self.queue_depth > self.cfg.queue_size // 2:
            return
        if not self.spill.pending():
            return
        try:
            path = self.spill.take()
        except OSError as e:
            self.note_error(f"spill file not rotated: {e.strerror or e}")
            return
        if path is not None:
            self._draining = path
            self._send(wire.DRAIN, path)

    def _writer_gone(self, protocol: _Protocol) -> None:
        """The socket closed. At shutdown that is the end. Otherwise the writer process died: what it
        held unconfirmed is counted as dropped (an upper bound: what had reached its write-ahead file is
        replayed by the next writer), what is still buffered here goes to the spill file, and so does
        every later record until a new writer process (respawned with backoff) has started."""
        if protocol is not self._protocol:
            return
        self._transport = None
        self._idle = self._catching_up = False
        if self._ready is not None and not self._ready.done():
            code = self._proc.poll() if self._proc else None
            self._ready.set_exception(RecorderStartError(f"the writer process exited during start-up (code {code})"))
            return
        if self._closing or not self._started or (self._respawning is not None and not self._respawning.done()):
            return  # shutting down, never started, or a failed restart the respawn loop retries
        code = self._proc.poll() if self._proc else None
        self.note_error(f"the writer process exited (code {code}); records go to the spill file until it is back")
        unsent, self._buf, self._buf_bytes = self._buf, [], 0
        self._spill_unsent(unsent)
        lost = self.queue_depth
        if lost > 0:
            self.count_dropped(
                lost, "the writer process exited before confirming them (at most; replayed if in its write-ahead file)"
            )
        log.error("the writer process exited (code %s) with %d records unconfirmed; spilling", code, max(lost, 0))
        self._done = self._queued
        for key in _CUMULATIVE:  # the dead writer's counts carry over to the next one's
            self._writer_base[key] = self._writer.get(key, 0)
        # A spill file the dead writer was replaying stays rotated and locked here (`_draining` keeps its
        # path) and is handed to the next writer once it is up.
        self._fail_waiting("the writer process exited")
        if self._loop is not None:
            self._respawning = self._loop.create_task(self._respawn())

    async def _respawn(self) -> None:
        """Start a new writer process under a new writer id (its segments must not collide with the dead
        one's); it replays the dead one's write-ahead file, then this side's spill file."""
        backoff = 1.0
        while not self._closing:
            await asyncio.sleep(backoff)
            if self._proc is not None:
                await asyncio.get_running_loop().run_in_executor(None, self._proc.wait)
            await asyncio.to_thread(_mark_stopped, self.data, self.writer_id)
            self._generation += 1
            self.writer_id = f"{self._base_id}-r{self._generation}"
            try:
                await self._spawn()
            except (RecorderStartError, OSError) as e:
                log.error("the writer process could not be restarted (retrying in %.0f s): %s", backoff, e)
                backoff = min(backoff * 2, 30.0)
                continue
            self._own_error = self._own_error_since = None
            log.warning("the writer process is back as %s", self.writer_id)
            if self._draining is not None:
                self._send(wire.DRAIN, self._draining)
            else:
                self._maybe_drain()
            return

    def _fail_waiting(self, why: str) -> None:
        while self._waiting:
            fut = self._waiting.popleft()[1]
            if not fut.done():
                fut.set_exception(OSError(why))

    def _send(self, kind: str, body: Any) -> None:
        if self._transport is not None:
            self._flush()  # keep order: records before the message
            try:
                self._transport.write(wire.frame(kind, body))
            except (RuntimeError, OSError) as e:  # the socket is closing
                log.warning("could not tell the writer %s: %s", kind, e)

    def _send_status(self) -> None:
        """This side's counters (and the gateway's metrics) to the writer, for the worker's status file."""
        status = {
            "pid": os.getpid(),
            "worker": self._base_id,
            "accepted": self.accepted,
            "spilled": self.spilled,
            "dropped": self.dropped,
            "drop_reasons": dict(self.drop_reasons),
            "queue_depth": self.queue_depth,
            "writer_scheduling": self.writer_scheduling,
            "writer_catch_ups": self.catch_ups,
            "writer_idle_refused": self.idle_refused,
        }
        if self._own_error:
            status.update(error=self._own_error, error_since=self._own_error_since)
        if self._status_source is not None:
            status.update(self._status_source())
        self._send(wire.STATUS, status)
        if not self._closing and self._loop is not None:
            self._status_handle = self._loop.call_later(STATUS_EVERY_S, self._send_status)

    def count_dropped(self, n: int, reason: str) -> None:
        """`n` records lost for `reason`: counted in memory and in this worker's loss file (one pwrite
        into its reserved block, no fsync: a failing request path must not wait on the disk)."""
        self.dropped += n
        self.drop_reasons[reason] = self.drop_reasons.get(reason, 0) + n
        self.losses.write(self.dropped, self.drop_reasons)

    def note_error(self, message: str) -> None:
        """Set this side's error (also how `spill_record` reports a failed spill)."""
        if self._own_error is None:
            self._own_error_since = time.time()
        self._own_error = message

    # -- what `/metrics` and `airlock status` read -----------------------------------------------

    def stats(self) -> dict[str, Any]:
        w = self._writer
        reasons = dict(self.drop_reasons)
        for reason, n in (w.get("writer_drop_reasons") or {}).items():
            reasons[reason] = reasons.get(reason, 0) + n
        return {
            "writer_id": self.writer_id,
            "pid": os.getpid(),
            "writer_pid": self.writer_pid,
            "queue_depth": self.queue_depth,
            "queue_capacity": self.cfg.queue_size,
            "accepted": self.accepted,
            "spilled": self.spilled + w.get("writer_spilled", 0),
            "dropped": self.dropped + w.get("writer_dropped", 0),
            "drop_reasons": reasons,
            "written": w.get("written", 0),
            "wal_records": w.get("wal_records", 0),
            "segments_written": w.get("segments_written", 0),
            "compactions": w.get("compactions", 0),
            "recovered": w.get("recovered", 0),
            "error": self.error,
            "error_since": self.error_since,
            "writer_scheduling": self.writer_scheduling,
            "writer_catch_ups": self.catch_ups,
            "writer_idle_refused": self.idle_refused,
            "durable": self.cfg.durable,
            "on_record_failure": self.cfg.on_record_failure,
        }
