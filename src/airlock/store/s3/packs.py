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
from collections.abc import Sequence
from typing import Protocol

import zstandard

from airlock.store.embedded.blobs import IndexRow, PackIndex, encode_frames
from airlock.store.s3.bucket import valid_writer_id

log = logging.getLogger("airlock.store.s3")

PACK_MAX_BYTES = 64 * 1024 * 1024


class PackUploads(Protocol):
    """Where whole packs go (S3Bucket)."""

    def put_pack(self, pack: str, data: bytes | bytearray) -> None: ...


class S3PackWriter(PackIndex):
    """PayloadSink on an object store, owned by one recorder writer."""

    def __init__(
        self,
        bucket: PackUploads,
        writer_id: str,
        level: int = 3,
        remember: int = 200_000,
        pack_max_bytes: int = PACK_MAX_BYTES,
    ) -> None:
        super().__init__(remember)  # its pending rows are those of uploaded packs
        self.bucket = bucket
        self.writer_id = valid_writer_id(writer_id)
        self._session = os.urandom(4).hex()
        self._compressor = zstandard.ZstdCompressor(level=level)
        self._pack_max_bytes = pack_max_bytes
        self._open = bytearray()  # the pack being built, not yet uploaded
        self._open_rows: list[IndexRow] = []
        self._pack_seq = 1
        self.uploaded = 0

    @property
    def _pack_name(self) -> str:
        return f"{self.writer_id}/{self._session}.{self._pack_seq:06d}.pack"

    def put_many(self, items: Sequence[bytes], sync: bool = False) -> list[str]:
        """Store each payload not seen recently; returns the sha256 digests of all, in order. With
        `sync`, or once the open pack is full, the pack is uploaded before this returns
        (StoreUnavailable if that fails; the payloads stay in the open pack for the next try)."""
        digests = [hashlib.sha256(data).hexdigest() for data in items]
        with self._lock:
            fresh = self._fresh(digests, items)
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
        self._stored(self._open_rows)
        self._open = bytearray()
        self._open_rows = []
        self._pack_seq += 1

    def _before_handout(self) -> None:
        """No index row names a pack not in the bucket: the open pack is uploaded before rows are handed
        out (StoreUnavailable if that fails, and then nothing is handed out)."""
        self._upload_open()

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
