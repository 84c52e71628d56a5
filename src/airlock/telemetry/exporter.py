"""OTLP out: a background task that tails the record's span segments and sends new spans to the
configured collector as OTLP/HTTP protobuf, off the request path.

Where it got to is kept per writer in the state database (see SegmentTail), so a restart resends
nothing. A batch is marked sent only after the collector accepted it (at least once: a crash between
the two resends that one batch, and so does a compaction that caught up with the exporter). Of several
gateway workers, the one holding run/otlp-export.lock exports; the others stand by.

The exporter has its own egress client whose only allowed destination is the collector's address."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gzip
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pyarrow.parquet as pq

from airlock.config.schema import OtlpExport
from airlock.errors import EgressRefused
from airlock.gateway.egress import EgressClient
from airlock.store.embedded import DataDir, SQLiteState
from airlock.store.embedded.segments import live_segments
from airlock.telemetry.otlp_out import export_request

log = logging.getLogger("airlock.telemetry")


@dataclass(frozen=True)
class Cursor:
    """Where a writer's export stands: every segment up to seq_done sent, and `partial_rows` rows of the
    segment file named `partial`."""

    seq_done: int = -1
    partial: str | None = None
    partial_rows: int = 0


@dataclass
class Batch:
    rows: list[dict[str, Any]] = field(default_factory=list)
    advance: dict[str, Cursor] = field(default_factory=dict)  # writer -> its cursor once this batch is accepted
    resent: int = 0  # rows sent again because a compaction merged them with unsent ones

    @property
    def empty(self) -> bool:
        return not self.advance


class SegmentTail:
    """New span rows since the cursor, per writer, in segment order.

    The unit is the segment: a segment file never changes once written, so "rows sent of this file" is
    exact. Compaction merges a writer's adjacent segments, and with tail sampling it also drops the rows
    of dropped traces, so row positions do not survive it; a merged segment that holds both sent and unsent
    segments (the exporter fell behind, the collector was down) is therefore sent whole again: at least
    once, never a loss. Normally the exporter (every few seconds) is far ahead of compaction (which waits
    for 16 segments of a second each)."""

    def __init__(self, data: DataDir, include_received: bool) -> None:
        self.data = data
        self.include_received = include_received
        self.state = SQLiteState(data.state_db)

    def cursor(self) -> dict[str, Cursor]:
        rows = self.state.conn.execute("SELECT writer, seq_done, partial, partial_rows FROM otlp_export_cursor")
        return {w: Cursor(seq, partial, n) for w, seq, partial, n in rows.fetchall()}

    def commit(self, advance: dict[str, Cursor]) -> None:
        self.state.conn.executemany(
            "INSERT INTO otlp_export_cursor(writer, seq_done, partial, partial_rows) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(writer) DO UPDATE SET seq_done = excluded.seq_done, partial = excluded.partial,"
            " partial_rows = excluded.partial_rows, updated_at = CURRENT_TIMESTAMP",
            [(w, c.seq_done, c.partial, c.partial_rows) for w, c in advance.items()],
        )

    def start_at_end(self) -> int:
        """On a first start (no cursor at all), mark everything already recorded as sent; returns segments skipped."""
        if self.cursor():
            return 0
        ends: dict[str, Cursor] = {}
        segments = live_segments(self.data.spans)
        for seg in segments:
            ends[seg.writer] = Cursor(max(seg.last, ends.get(seg.writer, Cursor()).seq_done))
        if ends:
            self.commit(ends)
        return len(segments)

    def next_batch(self, limit: int) -> Batch:
        """Up to `limit` rows not yet sent. A segment that vanishes mid-read (compacted) ends the batch
        early; the next call reads the merged segment."""
        cursor = self.cursor()
        batch = Batch()
        by_writer: dict[str, list[Any]] = {}
        for seg in live_segments(self.data.spans):
            by_writer.setdefault(seg.writer, []).append(seg)
        taken = 0
        for writer, segments in sorted(by_writer.items()):
            at = cursor.get(writer, Cursor())
            for seg in segments:
                if seg.last <= at.seq_done:
                    continue
                skip = at.partial_rows if at.partial == seg.path.name else 0
                try:
                    total = pq.ParquetFile(seg.path).metadata.num_rows
                    want = min(total - skip, limit - taken)
                    table = pq.read_table(seg.path).slice(skip, want)
                except FileNotFoundError:
                    return batch
                if seg.first <= at.seq_done:
                    batch.resent += want  # merged with segments already sent: sent whole again
                rows = table.to_pylist()
                if not self.include_received:
                    rows = [r for r in rows if r.get("airlock.source") != "otlp"]
                batch.rows.extend(rows)
                taken += want
                done = skip + want >= total
                at = Cursor(seg.last) if done else Cursor(at.seq_done, seg.path.name, skip + want)
                batch.advance[writer] = at
                if taken >= limit:
                    return batch
        return batch

    def close(self) -> None:
        self.state.close()


class OtlpExporter:
    def __init__(
        self, cfg: OtlpExport, data: DataDir, counters: dict[str, int], environ: dict[str, str] | None = None
    ) -> None:
        env = os.environ if environ is None else environ
        self.cfg = cfg
        self.data = data
        self.counters = counters
        self.egress = EgressClient([cfg.endpoint], pool_size=2)
        self.headers = {"Content-Type": "application/x-protobuf"}
        if cfg.gzip:
            self.headers["Content-Encoding"] = "gzip"
        for header, var in cfg.headers_env.items():
            if env.get(var):
                self.headers[header] = env[var]
        self.tail = SegmentTail(data, cfg.include_received)
        self._lock_fd: int | None = None
        self.last_error: str | None = None

    def _leader(self) -> bool:
        if self._lock_fd is not None:
            return True
        fd = os.open(self.data.run / "otlp-export.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def _encode(self, batch: Batch) -> bytes:
        body = export_request(batch.rows, self.cfg.service_name).SerializeToString()
        return gzip.compress(body, compresslevel=5) if self.cfg.gzip else body

    async def send(self, body: bytes) -> None:
        """POST one export request; raises on anything but a 2xx."""
        self.egress.check(self.cfg.endpoint)
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        async with self.egress.session.post(self.cfg.endpoint, data=body, headers=self.headers, timeout=timeout) as r:
            await r.read()
            if r.status // 100 != 2:
                raise OSError(f"collector answered HTTP {r.status}")

    async def export_once(self) -> int:
        """Send everything new, in batches; returns spans sent."""
        sent = 0
        while True:
            batch = await asyncio.to_thread(self.tail.next_batch, self.cfg.max_spans_per_request)
            if batch.empty:
                return sent
            if batch.rows:
                body = await asyncio.to_thread(self._encode, batch)
                await self.send(body)
            await asyncio.to_thread(self.tail.commit, batch.advance)
            self.counters["exported"] += len(batch.rows)
            if batch.resent:
                log.warning("OTLP export: %d spans sent again (compacted together with unsent ones)", batch.resent)
            sent += len(batch.rows)

    async def run(self, sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        backoff = 0.0
        started = False
        while True:
            if self._leader():
                try:
                    if not started and not self.cfg.backfill:
                        await asyncio.to_thread(self.tail.start_at_end)
                    started = True
                    await self.export_once()
                    backoff, self.last_error = 0.0, None
                except EgressRefused as e:
                    log.error("OTLP export refused: %s", e.detail)
                    backoff = self.cfg.interval_s
                except (OSError, aiohttp.ClientError, TimeoutError) as e:
                    self.counters["export_failures"] += 1
                    self.last_error = f"{type(e).__name__}: {e}"
                    backoff = min(max(backoff * 2, 1.0), 60.0)
                    log.warning("OTLP export failed (will retry in %.0f s): %s", backoff, self.last_error)
            await sleep(max(self.cfg.interval_s, backoff))

    async def close(self) -> None:
        await self.egress.close()
        self.tail.close()
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None
