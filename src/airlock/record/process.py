"""The writer process: the batch writer of one gateway worker, in a process of its own.

Run as `python -m airlock.record.process FD` by the gateway (see `link.py`), FD being one end of a socket
pair; the first frame on it is the start (configuration, writer id, stamp). Records arrive
in pickled batches (see `wire.py`) and go into the same batch writer as ever; what comes back is the
count of records in the write-ahead file (durable mode's acknowledgements, and the gateway's measure
of its backlog), the writer's counters and errors, and each spill file it has drained.

Why a process: the writer's work (hashing, compressing, reading usage out of responses, Arrow and
Parquet) held the gateway's GIL for about 35 us a request, a fifth of the worker's time; here it runs
on another core. The writer ignores SIGINT and SIGTERM: it stops when its gateway closes the socket
(or dies), after writing everything it holds (or, if the store is failing, putting it in its own
spill file for the next start)."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections import deque
from typing import Any

from airlock.record import scheduling, wire

log = logging.getLogger("airlock.recorder")

_FROM_SOCKET = object()  # the queue token of a record that came over the socket (counted back as done)
_STATS_KEYS = ("written", "wal_records", "segments_written", "compactions", "recovered", "error", "error_since")


class _Channel:
    """The writer's side of the socket, which stays blocking: the writer's thread reads it (waiting with
    poll, taking with MSG_DONTWAIT), and either thread sends on it under a lock. A full socket makes a
    send wait for the gateway to read; only a gateway that is gone ends the sending."""

    def __init__(self, fd: int) -> None:
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(True)
        self.reader = wire.FrameReader()
        self.early: list[tuple[str, Any]] = []  # messages that came with the start frame
        self._lock = threading.Lock()
        self.open = True

    def read_start(self) -> dict[str, Any]:
        """The first frame, which the gateway sends as soon as it has the socket."""
        while True:
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("the gateway closed the socket before sending the start")
            self.early.extend(self.reader.feed(data))
            if self.early:
                kind, body = self.early.pop(0)
                if kind != wire.START or not isinstance(body, dict):
                    raise ValueError(f"expected the start frame, got {kind!r}")
                return body

    def send(self, kind: str, body: Any) -> None:
        if not self.open:
            return
        with self._lock:
            try:
                self.sock.sendall(wire.frame(kind, body))
            except (BrokenPipeError, ConnectionResetError):
                self.open = False  # the gateway is gone; keep writing what we hold
            except OSError as e:
                self.open = False
                log.error("cannot report to the gateway any more: %s", e)


class WriterHost:
    """The recorder and batch writer of one gateway worker, fed from the socket."""

    def __init__(self, channel: _Channel, start: dict[str, Any]) -> None:
        from airlock.config.schema import Config
        from airlock.record.recorder import Recorder
        from airlock.record.writer import BatchWriter
        from airlock.store import writer_sinks
        from airlock.store.embedded import DataDir

        self.channel = channel
        config = Config.model_validate(start["config"])
        self.nice = config.recorder.writer_nice
        self.idle_wanted = config.recorder.writer_idle and not config.recorder.durable
        data = DataDir.at(config.data_dir)
        writer_id = start["writer_id"]
        # The gateway's spill file is <writer_id>.spill; this process's own (only at a failing shutdown) differs.
        self.rec = Recorder(
            config.recorder,
            data,
            writer_id,
            start.get("stamp") or {},
            spill_id=f"{writer_id}.w",
            worker=start.get("worker"),
        )
        self.gateway_status: dict[str, Any] = {}
        self.durable = config.recorder.durable
        self.done = 0
        self._done_sent = 0
        self._done_at = 0.0
        self._done_lock = threading.Lock()
        payloads, segments = writer_sinks(config, writer_id)
        self.writer = BatchWriter(
            self.rec,
            payloads,
            segments,
            status_hook=self._status_for_file,
            resolve_tokenizer=config.tokenizer,
            on_synced=self._synced,
            on_drained=lambda path: self.channel.send(wire.DRAINED, path),
        )
        self._last_stats: tuple[Any, ...] = ()
        self._stats_at = 0.0
        self._stats_lock = threading.Lock()
        self.rec.on_error_change = lambda: self.send_stats(force=True)  # healthz follows the disk at once
        self.rec.queue = SocketFeed(self, self.rec.queue.linger_s)  # type: ignore[assignment]

    def start_idle(self) -> tuple[bool, str | None]:
        """Put the whole process (the writer's thread included) under SCHED_IDLE if configured and
        allowed; (whether it is, and why not)."""
        if not self.idle_wanted:
            return False, None
        why_not = scheduling.idle_refused()
        if why_not is None:
            try:
                scheduling.set_idle(os.getpid(), True)
            except OSError as e:  # the writer still starts, at nice alone: scheduling is no reason to refuse
                with contextlib.suppress(OSError):  # undo what was set, as far as it goes
                    scheduling.set_idle(os.getpid(), False)
                why_not = f"SCHED_IDLE not set: {e.strerror or e}"
        return why_not is None, why_not

    def _status_for_file(self) -> dict[str, Any]:
        """The gateway's counters (its pid, what it accepted and spilled) with this process's own spills
        and drops added: the worker's status file speaks for both."""
        status = dict(self.gateway_status)
        status["spilled"] = status.get("spilled", 0) + self.rec.spilled
        status["dropped"] = status.get("dropped", 0) + self.rec.dropped
        reasons = dict(status.get("drop_reasons") or {})
        for reason, n in self.rec.drop_reasons.items():
            reasons[reason] = reasons.get(reason, 0) + n
        status["drop_reasons"] = reasons
        if self.writer.stopping:  # the gateway's last count predates the final hand-over
            status["queue_depth"] = self.rec.queue.qsize()
        return status

    def _synced(self, batch: list[Any]) -> None:
        self.done += sum(1 for _, token in batch if token is _FROM_SOCKET)
        self.send_done(force=self.durable)  # durable mode: responses wait on this

    def send_done(self, force: bool = False) -> None:
        """The count of records from the socket now in the write-ahead file. Outside durable mode it
        only bounds the gateway's backlog, so it goes at most every 50 ms: each one wakes the gateway's loop."""
        with self._done_lock:  # the writer's thread, and the main one at the end: never send a count backwards
            now = time.monotonic()
            if self.done != self._done_sent and (force or now - self._done_at >= 0.05):
                self._done_sent, self._done_at = self.done, now
                self.channel.send(wire.DONE, self.done)

    def stats(self) -> dict[str, Any]:
        s = self.rec.stats()
        out = {k: s[k] for k in _STATS_KEYS}
        out.update(writer_spilled=s["spilled"], writer_dropped=s["dropped"], writer_drop_reasons=s["drop_reasons"])
        return out

    def send_stats(self, force: bool = False) -> None:
        """The writer's counters to the gateway: at once when its error changes, else at most twice a second."""
        with self._stats_lock:  # the writer's thread, and the main one at start and end
            stats = self.stats()
            key = (stats["error"], stats["written"], stats["wal_records"], stats["writer_dropped"])
            now = time.monotonic()
            error_changed = not self._last_stats or key[0] != self._last_stats[0]
            if force or error_changed or (key != self._last_stats and now - self._stats_at >= 0.5):
                self._last_stats, self._stats_at = key, now
                self.channel.send(wire.STATS, stats)

    def receive(self, message: tuple[str, Any], items: deque[Any]) -> None:
        kind, body = message
        if kind == wire.RECORDS:
            items.extend((record, _FROM_SOCKET) for record in body)
        elif kind == wire.STATUS and isinstance(body, dict):
            self.gateway_status = body
        elif kind == wire.DRAIN and isinstance(body, str):
            self.writer.add_drain(body)

    def serve(self) -> None:
        """Run until the gateway closes its end (or dies), the writer has written out everything it
        received, and its thread has ended."""
        self.writer.join()
        self.send_done(force=True)
        self.send_stats(force=True)


class SocketFeed:
    """The batch writer's queue, read straight off the socket by the writer's own thread: no second
    thread handing records over (that hand-off, and the two threads taking turns at the GIL, cost
    about a quarter of the process's CPU). The socket's buffer is the bounded queue; the gateway keeps
    its backlog under `queue_size`."""

    def __init__(self, host: WriterHost, linger_s: float) -> None:
        self.host = host
        self.linger_s = linger_s
        self.sock = host.channel.sock
        self.reader = host.channel.reader
        self.poller = select.poll()
        self.poller.register(self.sock, select.POLLIN)
        self.items: deque[Any] = deque()
        self.ended = False
        for message in host.channel.early:
            host.receive(message, self.items)

    def qsize(self) -> int:
        return len(self.items)

    def empty(self) -> bool:
        return not self.items

    def put(self, item: Any) -> bool:  # the writer's interface; nothing in this process submits
        self.items.append(item)
        return True

    def take(self, limit: int, wait_s: float) -> list[Any]:
        if not self.items and not self.ended:
            self._read(wait_s)
            if self.items and self.linger_s and len(self.items) < limit:
                time.sleep(self.linger_s)  # gather a batch: a batch of one costs the writer as much as many
                self._read(0.0)
        self.host.send_done()
        self.host.send_stats()
        pop = self.items.popleft
        return [pop() for _ in range(min(limit, len(self.items)))]

    def pump(self) -> None:
        """Take in what has arrived without waiting: while the writer retries a failed batch it does
        not call `take`, but must still notice the gateway's end and stop (spilling what it holds)."""
        if not self.ended:
            self._read(0.0)

    def _read(self, wait_s: float) -> None:
        """Whatever the socket holds, waiting up to `wait_s` for the first bytes."""
        if wait_s > 0 and not self.poller.poll(wait_s * 1000):
            return
        while True:
            try:
                data = self.sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self.ended = True
                self.host.writer.request_stop()  # write out what is held, then end
                return
            for message in self.reader.feed(data):
                self.host.receive(message, self.items)


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # the gateway says when to stop, by closing the socket
    channel = _Channel(int(sys.argv[1]))
    try:
        start = channel.read_start()
        host = WriterHost(channel, start)
        if host.nice:  # recording yields the CPU to serving, and catches up in the gaps
            scheduling.set_nice(os.getpid(), host.nice)
        host.writer.start()  # the data directory, the writer's lock, recovery of earlier runs
        idle, why_not = host.start_idle()
    except Exception as e:  # reported to the gateway, which refuses to start without its recorder
        channel.send(wire.FAILED, f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}")
        log.exception("the writer process could not start")
        return 2
    # What start-up built (config, tokenizers, the digest window) lives for the whole run: out of the
    # collector's way; and the young generation collected less often, as each batch makes many objects.
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    channel.send(wire.READY, {"pid": os.getpid(), "idle": idle, "idle_refused": why_not})
    host.send_stats(force=True)
    host.serve()
    with contextlib.suppress(OSError):
        channel.sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
