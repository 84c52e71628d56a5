"""Append-only files of framed records: [u32 length][u32 crc32][body]. A torn tail (a crash in
the middle of a write) is detected by length or checksum, and reading stops there.

A body is a msgpack map (spill files: records still holding their payload bytes) or a JSON object
(write-ahead rows, which hold no bytes: orjson encodes a row in about a third of msgpack's time). The
first byte tells them apart: a msgpack map never starts with `{`."""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import msgpack
import orjson

_HEADER = struct.Struct("<II")


def encode(record: dict[str, Any]) -> bytes:
    body = msgpack.packb(record, use_bin_type=True)
    return _HEADER.pack(len(body), zlib.crc32(body)) + body


def encode_row(row: dict[str, Any]) -> bytes:
    """A finished row as JSON, or msgpack for a row holding bytes. Raises for a value neither can hold
    (an integer over 64 bits): the writer keeps such a row as a partial row."""
    try:
        body = orjson.dumps(row)
    except TypeError:
        return encode(row)
    return _HEADER.pack(len(body), zlib.crc32(body)) + body


def _decode(body: bytes) -> Any:
    return orjson.loads(body) if body[:1] == b"{" else msgpack.unpackb(body, raw=False)


def read_frames(path: str) -> tuple[list[dict[str, Any]], int]:
    """All intact records in the file, and the number of bytes of torn tail that were ignored."""
    with open(path, "rb") as f:
        data = f.read()
    records: list[dict[str, Any]] = []
    pos = 0
    for record, end in _iter(data):
        records.append(record)
        pos = end
    return records, len(data) - pos


def _iter(data: bytes) -> Iterator[tuple[dict[str, Any], int]]:
    pos, n = 0, len(data)
    while pos + _HEADER.size <= n:
        length, crc = _HEADER.unpack_from(data, pos)
        start, end = pos + _HEADER.size, pos + _HEADER.size + length
        if end > n:
            return
        body = data[start:end]
        if zlib.crc32(body) != crc:
            return
        yield _decode(body), end
        pos = end


class FrameFile:
    """An open append-only frame file. Writes go straight to the OS (no user-space buffer), so a
    process crash loses nothing that `append` returned from; `sync` makes it survive power loss."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.size = os.fstat(self.fd).st_size

    def append(self, frames: bytes) -> None:
        """All of the frames or none: a failed write is cut back so no torn frame stays mid-file."""
        view = memoryview(frames)
        try:
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
        except OSError:
            # If even the cut fails, readers stop at the torn frame: later frames in this file are lost.
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
            raise
        self.size += len(frames)

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
