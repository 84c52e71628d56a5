"""The writer process: the batch writer of one gateway worker, in a process of its own.

Run as `python -m airlock.record.process FD` by the gateway (see `link.py`), with the start document
(configuration, writer id, stamp) as JSON on stdin and one end of a socket pair as FD. Records arrive
as msgpack maps and go into the same bounded queue and batch writer as ever; what comes back is the
count of records in the write-ahead file (durable mode's acknowledgements, and the gateway's measure
of its backlog), the writer's counters and errors, and each spill file it has drained.

Why a process: the writer's work (hashing, compressing, reading usage out of responses, Arrow and
Parquet) held the gateway's GIL for about 35 us a request, a fifth of the worker's time; here it runs
on another core. The writer ignores SIGINT and SIGTERM: it stops when its gateway closes the socket
(or dies), after writing everything it holds."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

import orjson

from airlock.record import wire

log = logging.getLogger("airlock.recorder")

_FROM_SOCKET = object()  # the queue token of a record that came over the socket (counted back as done)
_STATS_KEYS = ("written", "wal_records", "segments_written", "compactions", "recovered", "error", "error_since")


class _Channel:
    """The writer's side of the socket: reads on one thread, sends (under a lock) from any."""

    def __init__(self, fd: int) -> None:
        self.recv_sock = socket.socket(fileno=fd)
        self.send_sock = self.recv_sock.dup()  # blocking sends; the reading side polls with a timeout
        self.recv_sock.settimeout(0.2)
        self._lock = threading.Lock()
        self._pack = wire.packer()
        self.open = True

    def send(self, kind: str, body: Any) -> None:
        if not self.open:
            return
        with self._lock:
            try:
                self.send_sock.sendall(self._pack.pack([kind, body]))
            except OSError:
                self.open = False  # the gateway is gone; keep writing what we hold


class WriterHost:
    """The recorder and batch writer of one gateway worker, fed from the socket."""

    def __init__(self, channel: _Channel, start: dict[str, Any]) -> None:
        from airlock.config.schema import Config
        from airlock.record.recorder import Recorder
        from airlock.record.writer import BatchWriter
        from airlock.sampling.retention import SampledRetention
        from airlock.store.embedded import DataDir, PackWriter, ParquetSegments

        self.channel = channel
        config = Config.model_validate(start["config"])
        self.nice = config.recorder.writer_nice
        data = DataDir.at(config.data_dir)
        writer_id = start["writer_id"]
        # The gateway's spill file is <writer_id>.spill; this process's own (only at a failing shutdown) differs.
        self.rec = Recorder(config.recorder, data, writer_id, start.get("stamp") or {}, spill_id=f"{writer_id}.w")
        self.gateway_status: dict[str, Any] = {}
        self.durable = config.recorder.durable
        self.done = 0
        self._done_sent = 0
        self._done_at = 0.0
        self._done_lock = threading.Lock()
        self.writer = BatchWriter(
            self.rec,
            PackWriter(data.blobs, writer_id),
            ParquetSegments(data, SampledRetention(data) if config.sampling.enabled else None),
            status_hook=self._status_for_file,
            resolve_tokenizer=config.tokenizer,
            on_synced=self._synced,
            on_drained=lambda path: self.channel.send(wire.DRAINED, path),
        )
        self._last_stats: tuple[Any, ...] = ()
        self._stats_at = 0.0
        self._stats_lock = threading.Lock()
        self.rec.on_error_change = lambda: self.send_stats(force=True)  # healthz follows the disk at once

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
        return status

    def _synced(self, batch: list[Any]) -> None:
        self.done += sum(1 for _, token in batch if token is _FROM_SOCKET)
        self.send_done(force=self.durable)  # durable mode: responses wait on this

    def send_done(self, force: bool = False) -> None:
        """The count of records from the socket now in the write-ahead file. Outside durable mode it
        only bounds the gateway's backlog, so it goes at most every 50 ms: each one wakes the gateway's loop."""
        with self._done_lock:  # from the writer thread and the reading thread: never send a count backwards
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
        with self._stats_lock:  # from the reading thread, and the writer's when its error changes
            stats = self.stats()
            key = (stats["error"], stats["written"], stats["wal_records"], stats["writer_dropped"])
            now = time.monotonic()
            error_changed = not self._last_stats or key[0] != self._last_stats[0]
            if force or error_changed or (key != self._last_stats and now - self._stats_at >= 0.5):
                self._last_stats, self._stats_at = key, now
                self.channel.send(wire.STATS, stats)

    def receive(self, obj: Any) -> None:
        if isinstance(obj, dict):
            item = (wire.unpack_record(obj), _FROM_SOCKET)
            while not self.rec.queue.put(item):  # cannot happen while the gateway keeps its backlog under
                time.sleep(0.001)  # the queue's size, but never drop: wait for room
        elif isinstance(obj, list) and len(obj) == 2:
            kind, body = obj
            if kind == wire.STATUS and isinstance(body, dict):
                self.gateway_status = body
            elif kind == wire.DRAIN and isinstance(body, str):
                self.writer.add_drain(body)

    def serve(self) -> None:
        """Read until the gateway closes its end; then write out everything held and stop."""
        unpacker = wire.unpacker()
        sock = self.channel.recv_sock
        while True:
            try:
                data = sock.recv(1 << 18)
            except TimeoutError:
                data = None
            except OSError:
                data = b""
            if data == b"":
                break
            if data:
                unpacker.feed(data)
                for obj in unpacker:
                    self.receive(obj)
            self.send_done()
            self.send_stats()
        self.writer.stop(timeout=120.0)
        self.send_done(force=True)
        self.send_stats(force=True)


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # the gateway says when to stop, by closing the socket
    channel = _Channel(int(sys.argv[1]))
    try:
        start = orjson.loads(sys.stdin.buffer.read())
        host = WriterHost(channel, start)
        if host.nice:  # recording yields the CPU to serving, and catches up in the gaps
            os.nice(host.nice)
        host.writer.start()  # the data directory, the writer's lock, recovery of earlier runs
    except Exception as e:  # reported to the gateway, which refuses to start without its recorder
        channel.send(wire.FAILED, f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}")
        log.exception("the writer process could not start")
        return 2
    channel.send(wire.READY, os.getpid())
    host.send_stats(force=True)
    host.serve()
    with contextlib.suppress(OSError):
        channel.send_sock.close()
        channel.recv_sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
