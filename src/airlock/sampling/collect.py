"""`airlock sample gc`: with the gateway stopped, drop what sampling did not keep everywhere at once.

Compaction in a running gateway already drops dropped traces' spans as it merges segments; this also
rewrites segments that will never be merged again (the last small ones), and releases payloads:

1. rewrite every span (and hop) segment holding spans of a dropped trace outside the replay reserve;
2. referenced = every payload digest named by a remaining span or by a write-ahead file not yet
   replayed; a digest in the blob index that nothing references is released (payloads are shared
   between traces by deduplication, so a blob stays while any remaining span names it);
3. rewrite the blob index without the released digests (so no writer will deduplicate against them);
4. rewrite each pack file that held one: frames whose blobs are all released become holes; a frame
   that also holds kept blobs is recompressed with the released bytes zeroed, in place of the same
   length, so every index row of a kept blob stays valid even if the rewrite is interrupted.

It needs the gateway stopped because a live writer deduplicates new payloads against an in-memory
window of recent digests: releasing one it may still name would lose a future payload. Every writer's
lock is taken first; if any is held, nothing is done."""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import zstandard

from airlock.errors import GatewayRunning
from airlock.record import frames
from airlock.record.schema import PAYLOAD_COLUMNS
from airlock.sampling.retention import SampledRetention
from airlock.store.embedded import DataDir
from airlock.store.embedded.blobs import _ENTRY, _FRAME_HEAD
from airlock.store.embedded.copies import copies_dir
from airlock.store.embedded.segments import _write_atomic, live_segments


@dataclass
class CollectResult:
    segments_rewritten: int = 0
    spans_removed: int = 0
    blobs_released: int = 0
    packs_rewritten: int = 0
    pack_bytes_before: int = 0
    pack_bytes_after: int = 0


def _take_all_locks(data: DataDir) -> list[int]:
    fds: list[int] = []
    for lock in sorted(data.run.glob("*.lock")):
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            for f in fds:
                os.close(f)
            raise GatewayRunning(f"{lock.name} is held: stop the gateway (and any sampler) first") from None
        fds.append(fd)
    return fds


def collect(data: DataDir) -> CollectResult:
    fds = _take_all_locks(data)
    try:
        result = CollectResult()
        _prune_segments(data, result)
        released = _unreferenced(data)
        result.blobs_released = len(released)
        if released:
            _rewrite_index(data, released)
            _rewrite_packs(data, released, result)
        else:
            result.pack_bytes_before = result.pack_bytes_after = _disk_bytes(data.blobs)
        return result
    finally:
        for fd in fds:
            os.close(fd)


def _prune_segments(data: DataDir, result: CollectResult) -> None:
    retention = SampledRetention(data)
    for seg in live_segments(data.spans):
        spans = pq.read_table(seg.path)
        hops_path = data.hops / seg.path.name
        hops = pq.read_table(hops_path) if hops_path.exists() else None
        kept_spans, kept_hops = retention.retain(spans, hops if hops is not None else _empty_hops())
        if kept_spans.num_rows == spans.num_rows and kept_spans.equals(spans):
            continue
        if hops is not None:
            _write_atomic(kept_hops, hops_path)
        _write_atomic(kept_spans, seg.path)
        # The segment keeps its name, so its query copy would be reused as it was: remove it.
        (copies_dir(data) / seg.path.name).unlink(missing_ok=True)
        result.segments_rewritten += 1
        result.spans_removed += spans.num_rows - kept_spans.num_rows


def _empty_hops() -> pa.Table:
    from airlock.record.schema import HOP_SCHEMA

    return HOP_SCHEMA.empty_table()


def _unreferenced(data: DataDir) -> set[str]:
    referenced: set[str] = set()
    for seg in live_segments(data.spans):
        present = [c for c in PAYLOAD_COLUMNS if c in pq.read_schema(seg.path).names]
        table = pq.read_table(seg.path, columns=present)
        for column in present:
            referenced.update(d for d in pc.unique(table[column]).to_pylist() if d)
    for wal in data.wal.glob("*.wal"):
        records, _ = frames.read_frames(str(wal))
        for r in records:
            referenced.update(r.get(c) for c in PAYLOAD_COLUMNS if isinstance(r.get(c), str))
            for row in r.get("_blob_index") or ():  # blobs stored for rows in this file: keep
                referenced.add(str(row[0]))
    indexed: set[str] = set()
    for seg in live_segments(data.blob_index):
        indexed.update(pq.read_table(seg.path, columns=["digest"])["digest"].to_pylist())
    return indexed - referenced


def _rewrite_index(data: DataDir, released: set[str]) -> None:
    gone = pa.array(sorted(released))
    for seg in live_segments(data.blob_index):
        table = pq.read_table(seg.path)
        kept = table.filter(pc.invert(pc.is_in(table["digest"], gone)))
        if kept.num_rows != table.num_rows:
            _write_atomic(kept, seg.path)


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.glob("*.pack"))


def _rewrite_packs(data: DataDir, released: set[str], result: CollectResult) -> None:
    result.pack_bytes_before = _disk_bytes(data.blobs)
    cctx = zstandard.ZstdCompressor(level=3)
    for pack in sorted(data.blobs.glob("*.pack")):
        raw = pack.read_bytes()
        pieces: list[tuple[int, bytes]] = []
        changed = False
        pos = 0
        while pos + _FRAME_HEAD.size <= len(raw):
            clen, count = _FRAME_HEAD.unpack_from(raw, pos)
            entries_at = pos + _FRAME_HEAD.size
            data_at = entries_at + count * _ENTRY.size
            end = data_at + clen
            if end > len(raw):
                break  # a torn tail: leave it as it is
            entries = [_ENTRY.unpack_from(raw, entries_at + i * _ENTRY.size) for i in range(count)]
            gone = [digest.hex() in released for digest, _ in entries]
            if not any(gone):
                pieces.append((pos, raw[pos:end]))
            elif all(gone):
                changed = True  # a hole
            else:
                changed = True
                pieces.append((pos, _zeroed_frame(raw[pos:end], entries, gone, cctx)))
            pos = end
        if pos < len(raw):
            pieces.append((pos, raw[pos:]))
        if not changed:
            continue
        tmp = pack.with_name(f".{pack.name}.tmp")  # written with holes where frames were dropped
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for offset, piece in pieces:
                os.pwrite(fd, piece, offset)
            os.ftruncate(fd, len(raw))  # same length; the dropped frames read as holes
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, pack)
        result.packs_rewritten += 1
    result.pack_bytes_after = _disk_bytes(data.blobs)


def _zeroed_frame(
    frame: bytes, entries: list[tuple[bytes, int]], gone: list[bool], cctx: zstandard.ZstdCompressor
) -> bytes:
    """The frame with released blobs' bytes zeroed and recompressed, no longer than the original."""
    clen, count = _FRAME_HEAD.unpack_from(frame, 0)
    data_at = _FRAME_HEAD.size + count * _ENTRY.size
    content = bytearray(zstandard.ZstdDecompressor().decompress(frame[data_at : data_at + clen]))
    offset = 0
    for (_, length), is_gone in zip(entries, gone, strict=True):
        if is_gone:
            content[offset : offset + length] = bytes(length)
        offset += length
    compressed = cctx.compress(bytes(content))
    rebuilt = _FRAME_HEAD.pack(len(compressed), count) + frame[_FRAME_HEAD.size : data_at] + compressed
    return rebuilt if len(rebuilt) <= len(frame) else frame
