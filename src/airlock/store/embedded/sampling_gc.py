"""`airlock sample gc` on the embedded record: span and hop segments rewritten without what sampling
dropped, the blob index without released digests, and pack files with released blobs' bytes freed.

A pack file is rewritten so that every index row of a kept blob stays valid even if the rewrite is
interrupted: frames whose blobs are all released become holes (the file keeps its length); a frame that
also holds kept blobs is recompressed with the released bytes zeroed, in place of the same length."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import zstandard

from airlock.errors import GatewayRunning
from airlock.record import frames
from airlock.record.schema import HOP_SCHEMA, PAYLOAD_COLUMNS
from airlock.store.embedded.blobs import _ENTRY, _FRAME_HEAD
from airlock.store.embedded.failures import store_errors
from airlock.store.embedded.layout import DataDir
from airlock.store.embedded.segments import _write_atomic, live_segments
from airlock.store.sampling import PruneResult, ReleaseResult, Retain


class EmbeddedRecordCollector:
    def __init__(self, data: DataDir) -> None:
        self.data = data

    @contextlib.contextmanager
    def writers_stopped(self) -> Iterator[None]:
        """Every writer's lock (run/*.lock), taken without waiting: GatewayRunning if one is held."""
        with store_errors("taking the writers' locks"):
            fds = self._take_all_locks()
        try:
            yield
        finally:
            for fd in fds:
                os.close(fd)

    def _take_all_locks(self) -> list[int]:
        fds: list[int] = []
        for lock in sorted(self.data.run.glob("*.lock")):
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

    def prune_segments(self, retain: Retain) -> PruneResult:
        from airlock.store.embedded.copies import copies_dir

        data, result = self.data, PruneResult()
        with store_errors("rewriting span segments"):
            for seg in live_segments(data.spans):
                spans = pq.read_table(seg.path)
                hops_path = data.hops / seg.path.name
                hops = pq.read_table(hops_path) if hops_path.exists() else None
                kept_spans, kept_hops = retain(spans, hops if hops is not None else HOP_SCHEMA.empty_table())
                if kept_spans.num_rows == spans.num_rows and kept_spans.equals(spans):
                    continue
                if hops is not None:
                    _write_atomic(kept_hops, hops_path)
                _write_atomic(kept_spans, seg.path)
                # The segment keeps its name, so its query copy would be reused as it was: remove it.
                (copies_dir(data) / seg.path.name).unlink(missing_ok=True)
                result.segments_rewritten += 1
                result.spans_removed += spans.num_rows - kept_spans.num_rows
        return result

    def referenced_payloads(self) -> set[str]:
        """Digests named by a span segment, or by a write-ahead file not yet replayed (its rows, and the
        blobs stored for them)."""
        referenced: set[str] = set()
        with store_errors("reading payload references"):
            for seg in live_segments(self.data.spans):
                present = [c for c in PAYLOAD_COLUMNS if c in pq.read_schema(seg.path).names]
                table = pq.read_table(seg.path, columns=present)
                for column in present:
                    referenced.update(d for d in pc.unique(table[column]).to_pylist() if d)
            for wal in self.data.wal.glob("*.wal"):
                records, _ = frames.read_frames(str(wal))
                for r in records:
                    referenced.update(str(r[c]) for c in PAYLOAD_COLUMNS if isinstance(r.get(c), str))
                    for row in r.get("_blob_index") or ():
                        referenced.add(str(row[0]))
        return referenced

    def indexed_payloads(self) -> set[str]:
        indexed: set[str] = set()
        with store_errors("reading the blob index"):
            for seg in live_segments(self.data.blob_index):
                indexed.update(pq.read_table(seg.path, columns=["digest"])["digest"].to_pylist())
        return indexed

    def payload_bytes(self) -> int:
        with store_errors("measuring the pack files"):
            return _disk_bytes(self.data.blobs)

    def release_payloads(self, digests: set[str]) -> ReleaseResult:
        with store_errors("releasing payloads"):
            self._rewrite_index(digests)
            return self._rewrite_packs(digests)

    def _rewrite_index(self, released: set[str]) -> None:
        gone = pa.array(sorted(released))
        for seg in live_segments(self.data.blob_index):
            table = pq.read_table(seg.path)
            kept = table.filter(pc.invert(pc.is_in(table["digest"], gone)))
            if kept.num_rows != table.num_rows:
                _write_atomic(kept, seg.path)

    def _rewrite_packs(self, released: set[str]) -> ReleaseResult:
        result = ReleaseResult(bytes_before=_disk_bytes(self.data.blobs))
        cctx = zstandard.ZstdCompressor(level=3)
        for pack in sorted(self.data.blobs.glob("*.pack")):
            if _rewrite_pack(pack, released, cctx):
                result.packs_rewritten += 1
        result.bytes_after = _disk_bytes(self.data.blobs)
        return result


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.glob("*.pack"))


def _rewrite_pack(pack: Path, released: set[str], cctx: zstandard.ZstdCompressor) -> bool:
    """Rewrite one pack without the released blobs' bytes; False if it held none."""
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
        return False
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
    return True


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
