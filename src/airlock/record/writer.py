"""The batch writer: one thread per recorder that turns queued records into durable storage.

For each batch: append the records (payload bytes included) to the write-ahead file, fsync it in
durable mode and complete the waiting futures, then store payloads in the blob store and keep the
rows. When the open segment is old enough or big enough, write it as Parquet (temp name, rename) and
delete the write-ahead file it came from. On start, write-ahead and spill files that no live process
holds (a crash, a kill -9) are replayed first. An OSError anywhere keeps the batch and retries with
backoff; meanwhile the queue fills and the request path spills, so nothing is lost silently.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import pyarrow as pa

from airlock.record import frames
from airlock.record.enrich import enrich
from airlock.record.recorder import QueueItem, Recorder
from airlock.record.schema import HOP_SCHEMA, PAYLOAD_COLUMNS, SCHEMA_VERSION, SPAN_SCHEMA
from airlock.store.embedded.blobs import FileBlobStore
from airlock.store.embedded.segments import ParquetSegments

log = logging.getLogger("airlock.recorder")

_SPAN_NAMES = SPAN_SCHEMA.names
_HOP_NAMES = HOP_SCHEMA.names


def to_rows(record: dict[str, Any], blobs: FileBlobStore) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One span row and its hop rows from a queued record; payloads go to the blob store."""
    payloads: dict[str, bytes] = record.get("_payloads") or {}
    enrich(record, payloads.get("airlock.payload.response"))
    for column in PAYLOAD_COLUMNS:
        data = payloads.get(column)
        if data is not None:
            record[column] = blobs.put(data)
    if record.get("airlock.payload.request_bytes") is None and "airlock.payload.request" in payloads:
        record["airlock.payload.request_bytes"] = len(payloads["airlock.payload.request"])
    if record.get("airlock.payload.response_bytes") is None and "airlock.payload.response" in payloads:
        record["airlock.payload.response_bytes"] = len(payloads["airlock.payload.response"])
    for column in ("airlock.request.headers", "airlock.decisions"):
        value = record.get(column)
        if value is not None and not isinstance(value, str):
            record[column] = orjson.dumps(value).decode()
    attrs = record.get("attributes")
    if isinstance(attrs, dict):
        record["attributes"] = [(str(k), str(v)) for k, v in attrs.items()]
    elif isinstance(attrs, list):  # already converted, then read back from a write-ahead file
        record["attributes"] = [(str(k), str(v)) for k, v in attrs]
    start, end = record.get("start_ns"), record.get("end_ns")
    if start is not None and end is not None and record.get("duration_ms") is None:
        record["duration_ms"] = (end - start) / 1e6
    record["airlock.schema_version"] = SCHEMA_VERSION
    span = {name: record.get(name) for name in _SPAN_NAMES}
    hops = [{name: hop.get(name) for name in _HOP_NAMES} for hop in record.get("_hops") or ()]
    return span, hops


class BatchWriter:
    def __init__(
        self,
        recorder: Recorder,
        blobs: FileBlobStore,
        segments: ParquetSegments,
        status_hook: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.rec = recorder
        self.cfg = recorder.cfg
        self.data = recorder.data
        self.blobs = blobs
        self.segments = segments
        self.status_hook = status_hook
        self.writer_id = recorder.writer_id
        self.seq = 0
        self._wal: frames.FrameFile | None = None
        self._spans: list[dict[str, Any]] = []
        self._hops: list[dict[str, Any]] = []
        self._opened_at = 0.0
        self._pending: list[QueueItem] = []
        self._draining: list[str] = []  # rotated spill files not yet moved into the write-ahead file
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="airlock-writer", daemon=True)
        self._last_status = 0.0
        self._last_compact = time.monotonic()
        self._backoff = 0.0

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self.data.create()
        self.recover()
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    # -- recovery --------------------------------------------------------------------------------

    def recover(self) -> int:
        """Replay write-ahead and spill files that no live writer holds. Returns records recovered."""
        total = 0
        for folder, suffixes in ((self.data.wal, (".wal",)), (self.data.spill, (".spill", ".draining"))):
            for name in sorted(os.listdir(folder)):
                if not name.endswith(suffixes) or name.startswith(self.writer_id + "."):
                    continue
                total += self._recover_file(os.path.join(folder, name), name)
        self.rec.recovered += total
        if total:
            log.warning("recovered %d records from an earlier run", total)
        return total

    def _recover_file(self, path: str, name: str) -> int:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return 0
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # a live writer owns it
            if name.endswith(".wal"):
                writer, _, seq = name[: -len(".wal")].rpartition(".")
                if self.segments.covers(writer, int(seq)):
                    os.unlink(path)  # its segment was written before the crash
                    return 0
            records, torn = frames.read_frames(path)
            if torn:
                log.warning("%s: ignored %d bytes of torn tail", path, torn)
            if records:
                self._process([(r, None) for r in records])
                self._sync_wal()
            os.unlink(path)
            return len(records)
        finally:
            os.close(fd)

    # -- the loop --------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()
            batch = self._pending or self._drain(wait=0.0 if stopping else self._wait_s())
            if not batch and not self._backoff:
                self._guarded(self._drain_spill)
            if batch:
                self._guarded(self._handle, batch)
            if self._spans and (stopping or self._segment_due()):
                self._guarded(self._flush_segment)
            now = time.monotonic()
            if now - self._last_compact > 5.0:
                self._last_compact = now
                self._guarded(self._compact)
            if now - self._last_status > 1.0 or stopping:
                self._last_status = now
                self.write_status(stopped=False)
            idle = not self._pending and self.rec.queue.empty() and not self._spans
            spill_left = self.rec.spill.pending() or self._draining
            if stopping and idle and (not spill_left or self.rec.error):
                break
            if self._backoff:
                if stopping and self._backoff >= 1.0:
                    log.error("recorder still failing at shutdown: %s", self.rec.error)
                    break
                time.sleep(self._backoff)
        if self._wal is not None:
            self._wal.close()
        self.rec.spill.close()
        self.write_status(stopped=True)

    def _wait_s(self) -> float:
        if self._spans:
            return max(0.0, min(self.cfg.segment_max_age_s - (time.monotonic() - self._opened_at), 0.25))
        return 0.25

    def _drain(self, wait: float) -> list[QueueItem]:
        q = self.rec.queue
        try:
            first = q.get(timeout=wait) if wait > 0 else q.get_nowait()
        except queue.Empty:
            return []
        batch = [first]
        if self.cfg.durable and self.cfg.group_sync_ms > 0:
            time.sleep(self.cfg.group_sync_ms / 1000.0)  # group commit: gather a few more
        limit = self.cfg.batch_max_records
        while len(batch) < limit:
            try:
                batch.append(q.get_nowait())
            except queue.Empty:
                break
        return batch

    def _drain_spill(self) -> None:
        """Move spilled records into the write-ahead file once the queue has room again."""
        if self.rec.queue.qsize() > self.cfg.queue_size // 2:
            return
        if not self._draining:
            path = self.rec.spill.take()
            if path is None:
                return
            self._draining.append(path)
        path = self._draining[0]
        records, _ = frames.read_frames(path)
        self._process([(r, None) for r in records])
        self._sync_wal()
        os.unlink(path)
        self._draining.pop(0)

    def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except OSError as e:
            self.rec.note_error(f"{type(e).__name__}: {e.strerror or e}")
            self._backoff = min(max(self._backoff * 2, 0.05), 2.0)
            log.error("recorder write failed (will retry): %s", e)
        else:
            if self._backoff or self.rec.error:
                self.rec.clear_error()
            self._backoff = 0.0

    def _handle(self, batch: list[QueueItem]) -> None:
        self._pending = batch
        self._process(batch)
        self._sync_wal()
        self._pending = []
        futures = [f for _, f in batch if f is not None]
        if futures and self.rec._loop is not None:
            self.rec._loop.call_soon_threadsafe(_resolve_all, futures)

    def _process(self, batch: list[QueueItem]) -> None:
        # Payloads first (idempotent), then the write-ahead file, then the rows: a failure at any step
        # leaves nothing half-applied, so the retry of the same batch cannot duplicate a record.
        spans, hops = [], []
        for record, _ in batch:
            span, span_hops = to_rows(record, self.blobs)
            spans.append(span)
            hops.extend(span_hops)
        wal = self._open_wal()
        wal.append(b"".join(frames.encode(r) for r, _ in batch))
        self.rec.wal_records += len(batch)
        self._spans.extend(spans)
        self._hops.extend(hops)

    def _sync_wal(self) -> None:
        if self.cfg.durable and self._wal is not None:
            self._wal.sync()

    def _open_wal(self) -> frames.FrameFile:
        if self._wal is None:
            path = os.path.join(self.data.wal, f"{self.writer_id}.{self.seq:08d}.wal")
            self._wal = frames.FrameFile(path)
            fcntl.flock(self._wal.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._opened_at = time.monotonic()
        return self._wal

    def _segment_due(self) -> bool:
        return (
            len(self._spans) >= self.cfg.segment_max_records
            or time.monotonic() - self._opened_at >= self.cfg.segment_max_age_s
        )

    def _flush_segment(self) -> None:
        spans = pa.Table.from_pylist(self._spans, schema=SPAN_SCHEMA)
        hops = pa.Table.from_pylist(self._hops, schema=HOP_SCHEMA)
        self.segments.write(self.writer_id, self.seq, spans, hops)
        if self._wal is not None:
            self._wal.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._wal.path)
            self._wal = None
        self.rec.written += len(self._spans)
        self.rec.wal_records = 0
        self.rec.segments_written += 1
        self._spans, self._hops = [], []
        self.seq += 1

    def _compact(self) -> None:
        merged = self.segments.compact(self.writer_id, self.cfg.compact_min_segments)
        if merged:
            self.rec.compactions += 1

    def write_status(self, stopped: bool) -> None:
        status = self.rec.stats()
        status["stopped"] = stopped
        status["updated_at"] = time.time()
        if self.status_hook is not None:
            status.update(self.status_hook())
        path = os.path.join(self.data.run, f"{self.writer_id}.json")
        tmp = path + ".tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(orjson.dumps(status))
            os.replace(tmp, path)
        except OSError as e:  # the status file is a convenience; the counters live in memory
            log.debug("status file not written: %s", e)


def _resolve_all(futures: list[Any]) -> None:
    for f in futures:
        if not f.done():
            f.set_result(None)
