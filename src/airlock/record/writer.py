"""The batch writer: one thread per recorder that turns queued records into durable storage.

For each batch: store the payloads in the blob store, append the finished rows to the write-ahead
file (fsynced in durable mode, then the waiting futures complete), and keep the rows in the open
segment. When the open segment is old enough or big enough, write it as Parquet (temp name, rename) and
delete the write-ahead file it came from. On start, write-ahead and spill files that no live process
holds (a crash, a kill -9) are replayed first. An OSError anywhere keeps the batch and retries with
backoff; meanwhile the queue fills and the request path spills, so nothing is lost silently. At a
shutdown the disk still refuses, what is held goes to the spill file, and what even that refuses is
counted in the writer's loss file (`losses.py`), reserved at start for this.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import pyarrow as pa

from airlock.errors import StoreError
from airlock.record import frames
from airlock.record.recorder import QueueItem, Recorder, strip_secret_headers
from airlock.record.rows import checked_row, finish_row, partial_row, store_payloads
from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.store.embedded.blobs import recent_digests
from airlock.store.embedded.segments import live_segments
from airlock.store.interface import PayloadSink, SegmentSink

log = logging.getLogger("airlock.recorder")

_ARROW_CHUNK = 256
# Rows become Arrow through one struct array: about a fifth less CPU than RecordBatch.from_pylist with
# 70 columns (measured 3.5 against 4.4 us a row); keys that are not columns (such as "_hops") are ignored.
_SPAN_STRUCT = pa.struct(list(SPAN_SCHEMA))
_HOP_STRUCT = pa.struct(list(HOP_SCHEMA))


def _arrow(rows: list[dict[str, Any]]) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """Span rows (each with its hops under "_hops") as a span batch and a hop batch."""
    spans = pa.RecordBatch.from_struct_array(pa.array(rows, type=_SPAN_STRUCT))
    hops = [h for row in rows for h in row.get("_hops") or ()]
    return spans, pa.RecordBatch.from_struct_array(pa.array(hops, type=_HOP_STRUCT))


_DRAIN_EVERY_S = 0.5


class BatchWriter:
    def __init__(
        self,
        recorder: Recorder,
        blobs: PayloadSink,
        segments: SegmentSink,
        status_hook: Callable[[], dict[str, Any]] | None = None,
        resolve_tokenizer: Callable[[str], Any] | None = None,
        on_synced: Callable[[list[QueueItem]], None] | None = None,
        on_drained: Callable[[str], None] | None = None,
    ) -> None:
        """`on_synced` is told of each batch once it is in the write-ahead file (by default, durable
        mode's futures are resolved on the recorder's loop); `on_drained` of each spill file replayed
        and deleted (by default the recorder's own spill releases it)."""
        self.rec = recorder
        self.cfg = recorder.cfg
        self.data = recorder.data
        self.blobs = blobs
        self.segments = segments
        self.status_hook = status_hook
        self.resolve_tokenizer = resolve_tokenizer
        self.on_synced = on_synced
        self.on_drained = on_drained
        self.writer_id = recorder.writer_id
        self.seq = 0
        self._wal: frames.FrameFile | None = None
        # The open segment, converted to Arrow in chunks of _ARROW_CHUNK rows: a whole segment at once
        # held the GIL for tens of milliseconds, and one conversion per small write batch cost ~200 us
        # of fixed overhead each (measured: 23 us a row at 12 rows a batch, 4 us at 200).
        self._spans: list[pa.RecordBatch] = []
        self._hops: list[pa.RecordBatch] = []
        self._rows: list[dict[str, Any]] = []
        self._open_rows = 0
        self._opened_at = 0.0
        self._pending: list[QueueItem] = []
        self._pending_applied = False
        self._draining_applied: str | None = None
        self._draining: list[str] = []  # rotated spill files not yet moved into the write-ahead file
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="airlock-writer", daemon=True)
        self._last_status = 0.0
        self._last_compact = time.monotonic()
        self._last_drain = time.monotonic()
        self._backoff = 0.0
        self._lock_fd = -1

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self.data.create()
        # Held for the writer's lifetime: whoever can take a writer's lock knows that writer is gone.
        fd = _lock_writer(self.data.run, self.writer_id, blocking=True)
        assert fd is not None
        self._lock_fd = fd
        self.rec.reserve_losses()  # before anything can be dropped: a full disk must still take the count
        self.recover()
        self.blobs.remember(recent_digests(self.data, 200_000))
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        """From the writer's own thread (its queue has ended): write out what is held, then end."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
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
            self._flush_segment()  # recovered records become visible now, not at the next age limit
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
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                return 0  # renamed or replaced while we waited: not the file we looked at
            if name.endswith(".wal"):
                writer, _, seq = name[: -len(".wal")].rpartition(".")
                if self.segments.covers(writer, int(seq)):
                    os.unlink(path)  # its segment was written before the crash
                    return 0
                # A crash between the hop and span files of a flush leaves hops without spans: the
                # replay below writes them again under this writer, so drop the partial ones.
                self.segments.discard_partial(writer, int(seq))
            records, torn = frames.read_frames(path)
            for r in records:
                if "_blob_index" in r:
                    self.blobs.restore(r["_blob_index"])
            records = [r for r in records if "_blob_index" not in r]
            if torn:
                log.warning("%s: ignored %d bytes of torn tail", path, torn)
            if records:
                self._process([(r, None) for r in records])
                self._sync_wal()
            os.unlink(path)
            return len(records)
        except FileNotFoundError:
            return 0
        finally:
            os.close(fd)

    # -- the loop --------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            if self._pending:
                self.rec.queue.pump()  # retrying a batch: still notice the end of the input
            stopping = self._stop.is_set()
            batch = self._pending or self._drain(wait=0.0 if stopping else self._wait_s())
            # Spilled records are replayed when the queue runs dry, and also every so often while it does
            # not: under steady traffic it never does, and the spill would wait for a quiet moment.
            if not self._backoff and (not batch or time.monotonic() - self._last_drain >= _DRAIN_EVERY_S):
                self._last_drain = time.monotonic()
                self._guarded(self._drain_spill)
            if batch:
                self._guarded(self._handle, batch)
            if self._open_rows and (stopping or self._segment_due()):
                self._guarded(self._flush_segment)
            now = time.monotonic()
            if now - self._last_compact > self.cfg.compact_interval_s:
                self._last_compact = now
                self._guarded(self._compact, clears=False)
            if now - self._last_status > 1.0 or stopping:
                self._last_status = now
                self.write_status(stopped=False)
            idle = not self._pending and self.rec.queue.empty() and not self._open_rows
            spill_left = self.rec.spill.pending() or self._draining
            if stopping and idle and (not spill_left or self.rec.error):
                break
            if self._backoff:
                if stopping and self._backoff >= 1.0:
                    self._spill_unwritten()  # and says so in one line
                    break
                time.sleep(self._backoff)
        if self._wal is not None:
            self._wal.close()
        self.blobs.close()
        self.rec.spill.close()
        self.write_status(stopped=True)
        self.rec.close_losses()
        os.close(self._lock_fd)

    def _spill_unwritten(self) -> None:
        """At a shutdown the disk refused: put what is still in memory into the spill file, so the next
        start replays it; what even the spill cannot take is counted as dropped."""
        left = [r for r, _ in self._pending] if not self._pending_applied else []
        left += [r for r, _ in self._drain(0.0)]
        while batch := self._drain(0.0):
            left += [r for r, _ in batch]
        refused: dict[str, int] = {}
        spilled = 0
        for record in left:
            strip_secret_headers(record)  # credentials never reach the disk
            try:
                self.rec.spill.append(record)
                spilled += 1
            except OSError as e:
                reason = f"shutdown while the store failed: {e.strerror or e}"
                refused[reason] = refused.get(reason, 0) + 1
        self.rec.spilled += spilled
        for reason, n in refused.items():  # one rewrite of the loss file per reason, not per record
            self.rec.count_dropped(n, reason)
        lost = sum(refused.values())
        where = f"counted as dropped in {self.rec.losses.path}" if self.rec.losses is not None else "counted as dropped"
        log.error(
            "recorder still failing at shutdown (%s): %d records spilled for the next start, %d lost (%s)",
            self.rec.error,
            spilled,
            lost,
            where,
        )
        self._pending = []

    def _wait_s(self) -> float:
        if self._open_rows:
            return max(0.0, min(self.cfg.segment_max_age_s - (time.monotonic() - self._opened_at), 0.25))
        return 0.25

    def add_drain(self, path: str) -> None:
        """A spill file written by another process (the gateway's request path), to replay and delete."""
        self._draining.append(path)

    def _drain(self, wait: float) -> list[QueueItem]:
        return self.rec.queue.take(self.cfg.batch_max_records, wait)

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
        if self._draining_applied != path:  # a retry after a failed sync must not append the rows again
            records, _ = frames.read_frames(path)
            self._process([(r, None) for r in records])
            self._draining_applied = path
        self._sync_wal()
        os.unlink(path)
        if self.on_drained is not None:
            self.on_drained(path)
        else:
            self.rec.spill.release(path)
        self._draining.pop(0)
        self._draining_applied = None

    def _guarded(self, fn: Callable[..., None], *args: Any, clears: bool = True) -> None:
        """Run one step; an error is noted and retried with backoff. A step that succeeds clears the
        error only if it `clears`: a compaction with nothing to merge says nothing about the disk."""
        try:
            fn(*args)
        except (OSError, StoreError) as e:  # the disk or a store: retried, logged in one line
            self.rec.note_error(f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}")
            self._backoff = min(max(self._backoff * 2, 0.05), 2.0)
            log.error("recorder write failed (will retry): %s", e)
        except Exception as e:  # a defect must not kill the writer thread silently
            self.rec.note_error(f"internal error: {type(e).__name__}: {e}")
            self._backoff = min(max(self._backoff * 2, 0.05), 2.0)
            log.exception("recorder failed (will retry)")
        else:
            if not clears:
                return
            if self._backoff or self.rec.error:
                self.rec.clear_error()
            self._backoff = 0.0

    def _handle(self, batch: list[QueueItem]) -> None:
        self._pending = batch
        if not self._pending_applied:
            self._process(batch)
            self._pending_applied = True  # a retry after a failed sync must not append the rows again
        self._sync_wal()
        self._pending, self._pending_applied = [], False
        if self.on_synced is not None:
            self.on_synced(batch)
            return
        futures = [f for _, f in batch if f is not None]
        if futures and self.rec._loop is not None:
            self.rec._loop.call_soon_threadsafe(_resolve_all, futures)

    def _process(self, batch: list[QueueItem]) -> None:
        # Payloads first (idempotent; synced in durable mode), then the write-ahead file of finished
        # rows, then the open segment: a failure at any step leaves nothing half-applied, so the retry
        # of the same batch cannot duplicate a record.
        records = [r for r, _ in batch]
        store_payloads(records, self.blobs, sync=self.cfg.durable)
        rows = [self._finish(r) for r in records]
        wal = self._open_wal()
        index = self.blobs.take_unlogged()
        head = frames.encode_row({"_blob_index": index}) if index else b""
        framed = []
        for i, row in enumerate(rows):
            try:
                framed.append(frames.encode_row(row))
            except (TypeError, ValueError, OverflowError) as e:  # a value no frame can hold: keep the core
                rows[i] = partial_row(row, e)
                framed.append(frames.encode_row(rows[i]))
        try:
            wal.append(head + b"".join(framed))
        except OSError:
            self.blobs.unlog(index)  # the index rows must reach a later write-ahead append
            raise
        self.rec.wal_records += len(rows)
        self._rows.extend(rows)
        self._open_rows += len(rows)
        if len(self._rows) >= _ARROW_CHUNK:
            self._to_arrow()

    def _to_arrow(self) -> None:
        rows, self._rows = self._rows, []
        try:
            spans, hops = _arrow(rows)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            # A value of the wrong type in some row: convert one by one, keeping a partial row for the bad ones.
            rows = [checked_row(row) for row in rows]
            spans, hops = _arrow(rows)
        self._spans.append(spans)
        if hops.num_rows:
            self._hops.append(hops)

    def _finish(self, record: dict[str, Any]) -> dict[str, Any]:
        """finish_row, but one malformed exchange (an upstream's odd usage, a client's odd message) must
        not stop the recorder: what cannot be derived is left empty and the reason kept on the row."""
        try:
            return finish_row(record, self.rec.stamp, self.resolve_tokenizer)
        except Exception as e:  # one malformed record is contained to that record
            return partial_row(record, e)

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
            self._open_rows >= self.cfg.segment_max_records
            or time.monotonic() - self._opened_at >= self.cfg.segment_max_age_s
        )

    def _flush_segment(self) -> None:
        if self._rows:
            self._to_arrow()
        spans = pa.Table.from_batches(self._spans, schema=SPAN_SCHEMA)
        hops = pa.Table.from_batches(self._hops, schema=HOP_SCHEMA)
        index = self.blobs.index_table()  # in the same flush: what a segment names, it can find
        self.segments.write(self.writer_id, self.seq, spans, hops, index)
        self.blobs.index_written(index.num_rows)
        if self._wal is not None:
            self._wal.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._wal.path)
            self._wal = None
        self.rec.written += self._open_rows
        self.rec.wal_records = 0
        self.rec.segments_written += 1
        self._spans, self._hops, self._open_rows = [], [], 0
        self.seq += 1

    def _compact(self) -> None:
        """Merge this writer's small segments, and those of writers that have stopped (each restart
        is a new writer, so a long-lived data directory would otherwise collect small files)."""
        if self.segments.compact(self.writer_id, self.cfg.compact_min_segments):
            self.rec.compactions += 1
        others = {s.writer for s in live_segments(self.data.spans)} - {self.writer_id}
        for writer in sorted(others):
            fd = _lock_writer(self.data.run, writer, blocking=False)
            if fd is None:
                continue  # alive, or another worker is compacting it
            try:
                if self.segments.compact(writer, self.cfg.compact_min_segments):
                    self.rec.compactions += 1
            finally:
                os.close(fd)

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


def _lock_writer(run_dir: Any, writer_id: str, blocking: bool) -> int | None:
    """An exclusive lock on run/<writer>.lock; None when someone else holds it."""
    fd = os.open(os.path.join(run_dir, f"{writer_id}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _resolve_all(futures: list[Any]) -> None:
    for f in futures:
        if not f.done():
            f.set_result(None)
