"""The batch writer's front: a bounded in-memory queue records are handed to, and a spill file for
when the queue is full. In the gateway this lives in the writer process (where the socket itself is
the queue, read by the writer's own thread; the request path talks to it through `link.py`); it also
runs in-process, where `submit` never waits on disk in the default mode and, in durable mode, returns
a future that completes once the record is in the fsynced write-ahead file. The spill file and its
helpers serve both sides.

Counters (`stats`) make every outcome visible: accepted, spilled, dropped (the spill itself failed),
written. Nothing is dropped silently: each drop is also counted in the process's loss file
(`losses.py`), reserved at start so that it can still be written on a full disk."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from airlock.config.schema import Recorder as RecorderConfig
from airlock.record import frames
from airlock.record.headers import SECRET_HEADERS
from airlock.record.losses import LossFile, loss_path
from airlock.store.embedded.layout import DataDir

log = logging.getLogger("airlock.recorder")

_SECRET_HEADER_BYTES = frozenset(h.encode() for h in SECRET_HEADERS)

# A record and its completion token: a future in durable mode (in-process), a marker in the writer
# process (counted back to the gateway once written), or None.
QueueItem = tuple[dict[str, Any], Any]


class RecordQueue:
    """A bounded hand-off to the writer thread. `put` is a deque append (no lock;
    a stdlib queue.Queue cost ~4 us a record in locks and notifications); the writer is woken through
    an event only when it is actually waiting, and otherwise collects a batch every few milliseconds."""

    def __init__(self, capacity: int, linger_s: float = 0.002) -> None:
        self.capacity = capacity
        self.linger_s = linger_s
        self._items: deque[QueueItem] = deque()
        self._wake = threading.Event()
        self._waiting = False

    def put(self, item: QueueItem) -> bool:
        if len(self._items) >= self.capacity:
            return False
        self._items.append(item)
        if self._waiting:
            self._wake.set()
        return True

    def qsize(self) -> int:
        return len(self._items)

    def pump(self) -> None:
        """Nothing to take in: records are put here directly (a queue fed from elsewhere overrides this)."""

    def empty(self) -> bool:
        return not self._items

    def take(self, limit: int, wait_s: float) -> list[QueueItem]:
        """Up to `limit` items, waiting up to `wait_s` for the first, then lingering to gather a batch.
        The linger applies under load too: a writer that took whatever was there at once spun on
        batches of one or two, competing with the event loop for the GIL at every record."""
        if wait_s > 0:
            if not self._items:
                self._waiting = True
                self._wake.clear()
                if not self._items:
                    self._wake.wait(wait_s)
                self._waiting = False
            if self._items and self.linger_s and len(self._items) < limit:
                time.sleep(self.linger_s)
        out: list[QueueItem] = []
        pop = self._items.popleft
        try:
            while len(out) < limit:
                out.append(pop())
        except IndexError:
            pass
        return out


class Spill:
    """The overflow file, appended by the request path when the queue is full, drained by the writer."""

    def __init__(self, folder: str, writer_id: str, durable: bool) -> None:
        self.folder = folder
        self.writer_id = writer_id
        self.durable = durable
        self.lock = threading.Lock()
        self._file: frames.FrameFile | None = None
        self._draining: dict[str, frames.FrameFile] = {}  # rotated out, still locked, not yet replayed
        self._rotations = 0

    @property
    def path(self) -> str:
        return os.path.join(self.folder, f"{self.writer_id}.spill")

    def append(self, record: dict[str, Any]) -> None:
        data = frames.encode(record)
        with self.lock:
            if self._file is None:
                self._file = frames.FrameFile(self.path)
                fcntl.flock(self._file.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._file.append(data)
            if self.durable:
                self._file.sync()

    def pending(self) -> bool:
        return self._file is not None and self._file.size > 0

    def take(self) -> str | None:
        """Rotate the spill file out for draining; returns its new path. The file stays locked (so no
        other process's recovery replays it too) until `release` after the writer has deleted it."""
        with self.lock:
            if self._file is None or self._file.size == 0:
                return None
            self._rotations += 1
            draining = os.path.join(self.folder, f"{self.writer_id}.{self._rotations:06d}.draining")
            os.rename(self.path, draining)
            self._draining[draining] = self._file
            self._file = None
            return draining

    def release(self, path: str) -> None:
        with self.lock:
            held = self._draining.pop(path, None)
        if held is not None:
            held.close()

    def close(self) -> None:
        with self.lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            for held in self._draining.values():
                held.close()
            self._draining.clear()


def strip_secret_headers(record: dict[str, Any]) -> None:
    """Credentials never reach the disk, in a spill file either."""
    raw_headers = record.get("_raw_headers")
    if raw_headers:
        record["_raw_headers"] = [(k, v) for k, v in raw_headers if k.lower() not in _SECRET_HEADER_BYTES]


def spill_record(owner: Any, record: dict[str, Any], fut: asyncio.Future[None] | None) -> None:
    """Append a record the queue cannot take to `owner.spill`, counting it spilled, or dropped (with
    the reason, and the owner's error set) when even the spill fails. In durable mode `fut` completes
    once the synced spill holds the record, or fails so its response is not acknowledged."""
    strip_secret_headers(record)
    try:
        owner.spill.append(record)
        owner.spilled += 1
    except OSError as e:
        reason = f"spill failed: {e.strerror or e}"
        owner.count_dropped(1, reason)
        owner.note_error(reason)
        if fut is not None:
            fut.set_exception(OSError(reason))
        return
    if fut is not None:
        fut.set_result(None)


class Recorder:
    def __init__(
        self,
        cfg: RecorderConfig,
        data: DataDir,
        writer_id: str,
        stamp: dict[str, Any] | None = None,
        spill_id: str | None = None,
        worker: str | None = None,
    ) -> None:
        """`worker` is the gateway worker this recorder writes for (its first writer's id; by default
        `writer_id`), named in the loss file so that `airlock status` can add up a worker's losses."""
        self.cfg = cfg
        self.stamp = stamp or {}  # columns every record of this writer carries (node, region)
        self.data = data
        self.writer_id = writer_id
        linger = cfg.group_sync_ms / 1000.0 if cfg.durable else 0.005
        self.queue = RecordQueue(cfg.queue_size, linger)
        self.spill = Spill(str(data.spill), spill_id or writer_id, cfg.durable)
        self.accepted = 0
        self.spilled = 0
        self.dropped = 0
        self.drop_reasons: dict[str, int] = {}
        self.losses: LossFile | None = None  # the dropped count on disk, once `reserve_losses` has run
        self.worker = worker or writer_id
        self._drop_lock = threading.Lock()  # the request path and the writer's thread both count
        self.error: str | None = None  # last persistence error, None once writes succeed again
        self.error_since: float | None = None
        self.written = 0  # records in finished segments
        self.wal_records = 0  # records in the write-ahead file, not yet in a segment
        self.segments_written = 0
        self.compactions = 0
        self.recovered = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.on_error_change: Callable[[], None] | None = None  # told when `error` is set, changed or cleared

    @property
    def accepting(self) -> bool:
        """False only when persistence is failing and policy says refuse unrecorded traffic."""
        return self.error is None or self.cfg.on_record_failure == "serve"

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def submit(self, record: dict[str, Any]) -> asyncio.Future[None] | None:
        """Hand a record over. Never blocks on the writer; returns a future only in durable mode."""
        self.accepted += 1
        fut: asyncio.Future[None] | None = None
        if self.cfg.durable and self._loop is not None:
            fut = self._loop.create_future()
        if self.queue.put((record, fut)):
            return fut
        spill_record(self, record, fut)
        return fut

    def reserve_losses(self) -> None:
        """Reserve this recorder's loss file (run/<writer_id>.writer.lost). Where the disk refuses
        even that, the count stays in memory (and each drop tries the file again): logged, not fatal."""
        self.losses = LossFile(
            loss_path(self.data.run, self.writer_id, "writer"), self.worker, self.writer_id, "writer"
        )
        try:
            self.losses.reserve()
        except OSError as e:
            log.error("the loss-count file %s could not be reserved: %s", self.losses.path, e.strerror or e)

    def count_dropped(self, n: int, reason: str) -> None:
        """`n` records lost for `reason`: counted in memory and in the loss file."""
        with self._drop_lock:
            self.dropped += n
            self.drop_reasons[reason] = self.drop_reasons.get(reason, 0) + n
            if self.losses is not None:
                self.losses.write(self.dropped, self.drop_reasons)

    def close_losses(self) -> None:
        """At the end: the loss file stays, with its count, or as a spare for the next process."""
        if self.losses is not None:
            self.losses.close()

    def note_error(self, message: str) -> None:
        changed = self.error != message
        if self.error is None:
            self.error_since = time.time()
        self.error = message
        if changed and self.on_error_change is not None:
            self.on_error_change()

    def clear_error(self) -> None:
        changed = self.error is not None
        self.error = None
        self.error_since = None
        if changed and self.on_error_change is not None:
            self.on_error_change()

    def stats(self) -> dict[str, Any]:
        return {
            "writer_id": self.writer_id,
            "pid": os.getpid(),
            "queue_depth": self.queue.qsize(),
            "queue_capacity": self.cfg.queue_size,
            "accepted": self.accepted,
            "spilled": self.spilled,
            "dropped": self.dropped,
            "drop_reasons": dict(self.drop_reasons),
            "written": self.written,
            "wal_records": self.wal_records,
            "segments_written": self.segments_written,
            "compactions": self.compactions,
            "recovered": self.recovered,
            "error": self.error,
            "error_since": self.error_since,
            "durable": self.cfg.durable,
            "on_record_failure": self.cfg.on_record_failure,
        }
