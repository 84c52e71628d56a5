"""The writing side of payloads on an S3-compatible store: the embedded pack format (zstd frames,
one index row per payload, see airlock.store.embedded.blobs) with each pack uploaded as one object.

Objects cannot be appended to, so a pack is built in memory and uploaded whole, then a new one is
opened. It is uploaded when it reaches `pack_max_bytes`, at a `put_many(sync=True)`, and before any
of its index rows leave the writer (`take_unlogged`, `index_table`): an index row, in a write-ahead
file or a segment, never names a pack that is not in the bucket. A pack whose upload failed stays open
with its rows held back, and is uploaded again (same name, same bytes) by the next call that needs it;
its payloads are in the deduplication window, so the batch writer's retry of the same records adds
nothing to it. Failures raise StoreUnavailable, which the batch writer retries with backoff.

Pack names are `<writer_id>/<session>.<n>.pack`, the session random per writer object, so a writer id
used again after a restart never overwrites the packs of its earlier run."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import pyarrow as pa
import zstandard

from airlock.store.embedded.blobs import INDEX_SCHEMA, IndexRow, encode_frames
from airlock.store.s3.bucket import valid_writer_id

log = logging.getLogger("airlock.store.s3")

PACK_MAX_BYTES = 64 * 1024 * 1024


class PackUploads(Protocol):
    """Where whole packs go (S3Bucket)."""

    def put_pack(self, pack: str, data: bytes | bytearray) -> None: ...


class S3PackWriter:
    """PayloadSink on an object store, owned by one recorder writer."""

    def __init__(
        self,
        bucket: PackUploads,
        writer_id: str,
        level: int = 3,
        remember: int = 200_000,
        pack_max_bytes: int = PACK_MAX_BYTES,
    ) -> None:
        self.bucket = bucket
        self.writer_id = valid_writer_id(writer_id)
        self._session = os.urandom(4).hex()
        self._compressor = zstandard.ZstdCompressor(level=level)
        self._known: OrderedDict[str, None] = OrderedDict()  # the deduplication window
        self._remember = remember
        self._pack_max_bytes = pack_max_bytes
        self._pending: list[IndexRow] = []  # in an uploaded pack, not yet in an index segment
        self._unlogged: list[IndexRow] = []  # pending rows the writer has not yet put in its write-ahead file
        self._open = bytearray()  # the pack being built, not yet uploaded
        self._open_rows: list[IndexRow] = []
        self._pack_seq = 1
        self._lock = threading.Lock()
        self.deduplicated = 0
        self.uploaded = 0

    @property
    def _pack_name(self) -> str:
        return f"{self.writer_id}/{self._session}.{self._pack_seq:06d}.pack"

    def remember(self, digests: Iterable[str]) -> None:
        """Seed the deduplication window (e.g. from the newest index segments at start-up)."""
        with self._lock:
            for d in digests:
                self._remember_digest(d)

    def put_many(self, items: Sequence[bytes], sync: bool = False) -> list[str]:
        """Store each payload not seen recently; returns the sha256 digests of all, in order. With
        `sync`, or once the open pack is full, the pack is uploaded before this returns
        (StoreUnavailable if that fails; the payloads stay in the open pack for the next try)."""
        digests = [hashlib.sha256(data).hexdigest() for data in items]
        with self._lock:
            fresh: dict[str, bytes] = {}
            for digest, data in zip(digests, items, strict=True):
                if digest in self._known or digest in fresh:
                    self.deduplicated += 1
                    continue
                fresh[digest] = data
            if fresh:
                frames, rows = encode_frames(self._compressor, fresh, self._pack_name, len(self._open))
                self._open += frames
                self._open_rows.extend(rows)
                for digest in fresh:
                    self._remember_digest(digest)
            if sync or len(self._open) >= self._pack_max_bytes:
                self._upload_open()
        return digests

    def _upload_open(self) -> None:
        """Upload the open pack, if it holds anything, and release its rows; then open the next."""
        if not self._open_rows:
            return
        self.bucket.put_pack(self._pack_name, self._open)
        self.uploaded += 1
        self._pending.extend(self._open_rows)
        self._unlogged.extend(self._open_rows)
        self._open = bytearray()
        self._open_rows = []
        self._pack_seq += 1

    def take_unlogged(self) -> list[IndexRow]:
        """Index rows of uploaded packs not yet handed out, for the writer's write-ahead file; the
        open pack is uploaded first (StoreUnavailable if that fails, and then nothing is handed out)."""
        with self._lock:
            self._upload_open()
            rows, self._unlogged = self._unlogged, []
        return rows

    def unlog(self, rows: list[IndexRow]) -> None:
        """Put back rows taken by take_unlogged whose write-ahead append failed."""
        with self._lock:
            self._unlogged[:0] = rows

    def restore(self, rows: Sequence[Sequence[Any]]) -> None:
        """Index rows read back from a write-ahead file after a crash (their packs were uploaded)."""
        with self._lock:
            for digest, pack, fo, fl, io, ln in rows:
                row: IndexRow = (str(digest), str(pack), int(fo), int(fl), int(io), int(ln))
                self._pending.append(row)
                self._unlogged.append(row)  # so the next write-ahead file carries it again
                self._remember_digest(row[0])

    def index_table(self) -> pa.Table:
        """The pending index rows as a table for the next segment (sorted, for row-group pruning); the
        open pack is uploaded first (StoreUnavailable if that fails)."""
        with self._lock:
            self._upload_open()
            rows = sorted(self._pending)
        return (
            pa.Table.from_arrays([pa.array(col) for col in zip(*rows, strict=True)], schema=INDEX_SCHEMA)
            if rows
            else INDEX_SCHEMA.empty_table()
        )

    def index_written(self, n: int) -> None:
        """The first n pending rows (as of index_table) are now in a segment."""
        with self._lock:
            self._pending = self._pending[n:]

    def _remember_digest(self, digest: str) -> None:
        self._known[digest] = None
        self._known.move_to_end(digest)
        if len(self._known) > self._remember:
            self._known.popitem(last=False)

    def close(self) -> None:
        """Drop the open pack, if an upload left one: none of its rows was handed out, so the records
        naming its payloads are still the writer's to keep (its spill) and store again."""
        with self._lock:
            if self._open_rows:
                log.warning(
                    "%s: closing with %d payloads not uploaded (pack %s)",
                    self.writer_id,
                    len(self._open_rows),
                    self._pack_name,
                )
            self._open = bytearray()
            self._open_rows = []
