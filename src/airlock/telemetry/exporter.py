"""OTLP out: a background task that tails the record's span segments and sends new spans to the
configured collector as OTLP/HTTP protobuf, off the request path.

Where it got to is kept per writer in an export cursor repository (see ExportTail), so a restart
resends nothing. A batch is marked sent only after the collector accepted it (at least once: a crash
between the two resends that one batch, and so does a compaction that caught up with the exporter). Of several
gateway workers, the one holding run/otlp-export.lock exports; the others stand by.

The exporter has its own egress client whose only allowed destination is the collector's address."""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import aiohttp

from airlock.config.schema import OtlpExport
from airlock.errors import EgressRefused, StoreConflict, StoreError
from airlock.gateway.egress import EgressClient
from airlock.store import Stores
from airlock.store.export import Cursor, CursorMove, ExportBatch, ExportCursorRepository, ExportFeed
from airlock.store.sampling import SamplerLock
from airlock.telemetry.otlp_out import export_request

log = logging.getLogger("airlock.telemetry")


class ExportTail:
    """New spans since the cursors, per writer: a feed of what was written and the repository of how far
    it was sent. A batch read from cursors that another exporter has since moved is refused on commit
    (StoreConflict) and nothing is moved: its spans may have gone out twice, none is skipped."""

    def __init__(self, feed: ExportFeed, cursors: ExportCursorRepository, include_received: bool) -> None:
        self.feed = feed
        self.cursors = cursors
        self.include_received = include_received

    def cursor(self) -> dict[str, Cursor]:
        return self.cursors.load()

    def commit(self, batch: ExportBatch) -> None:
        """Mark the batch sent; StoreConflict if another exporter moved one of its writers' cursors first."""
        self.cursors.advance({w: CursorMove(batch.since.get(w), c) for w, c in batch.advance.items()})

    def start_at_end(self) -> int:
        """On a first start (no cursor at all), mark everything already recorded as sent; returns segments skipped."""
        if self.cursors.load():
            return 0
        ends, skipped = self.feed.ends()
        if ends:
            try:
                self.cursors.advance({w: CursorMove(None, c) for w, c in ends.items()})
            except StoreConflict:  # another exporter started first, and its cursors stand
                return 0
        return skipped

    def next_batch(self, limit: int) -> ExportBatch:
        """Up to `limit` spans not yet sent (spans received over OTLP passed over unless included)."""
        batch = self.feed.next_batch(self.cursors.load(), limit)
        if self.include_received:
            return batch
        return replace(batch, rows=[r for r in batch.rows if r.get("airlock.source") != "otlp"])

    def close(self) -> None:
        self.cursors.close()


def export_tail(stores: Stores, include_received: bool) -> ExportTail:
    """The tail over a deployment's stores: the record's export feed and the cursors' repository."""
    return ExportTail(stores.export_feed, stores.open_export_cursors(), include_received)


class OtlpExporter:
    def __init__(
        self,
        cfg: OtlpExport,
        stores: Stores,
        counters: dict[str, int],
        environ: Mapping[str, str] | None = None,
        tail: ExportTail | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.cfg = cfg
        self.data = stores.data
        self.counters = counters
        self.egress = EgressClient([cfg.endpoint], pool_size=2)
        self.headers = {"Content-Type": "application/x-protobuf"}
        if cfg.gzip:
            self.headers["Content-Encoding"] = "gzip"
        for header, var in cfg.headers_env.items():
            if env.get(var):
                self.headers[header] = env[var]
        self.tail = tail if tail is not None else export_tail(stores, cfg.include_received)
        self._take_leader = stores.take_leader
        self._lock: SamplerLock | None = None
        self.last_error: str | None = None

    def _leader(self) -> bool:
        """Whether this process exports: one of those sharing the record does (the lock's scope is the
        record's: this node's processes, or every node's on a shared record)."""
        if self._lock is None:
            self._lock = self._take_leader("otlp-export")
        return self._lock is not None

    def _encode(self, batch: ExportBatch) -> bytes:
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
            try:
                await asyncio.to_thread(self.tail.commit, batch)
            except StoreConflict as e:
                log.warning(
                    "OTLP export: %s; its batch of %d spans may have been sent twice", e.detail, len(batch.rows)
                )
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
                except (OSError, aiohttp.ClientError, TimeoutError, StoreError) as e:
                    self.counters["export_failures"] += 1
                    self.last_error = f"{type(e).__name__}: {e}"
                    backoff = min(max(backoff * 2, 1.0), 60.0)
                    log.warning("OTLP export failed (will retry in %.0f s): %s", backoff, self.last_error)
            await sleep(max(self.cfg.interval_s, backoff))

    async def close(self) -> None:
        await self.egress.close()
        self.tail.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None
