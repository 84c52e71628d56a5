"""The loss-count file: how many records one process could not write, and why, kept where a full disk
cannot refuse it.

Each process that can lose records (a gateway worker's request path, its writer process) reserves a
file of `LOSS_FILE_BYTES` in the data directory's `run/` folder when it starts, written whole and
fsynced once, and holds an flock on it while it lives. Every later count rewrites that same block in
place (one pwrite at offset 0, never longer, never truncated), so the filesystem needs no new block
for it: on a disk that has filled up since, the count still lands. It is not fsynced again (a power
loss can take the last count, as it can take the records themselves), which keeps a failing request
path from waiting on the disk.

A file whose process has ended with nothing counted stays as a spare: the next process to start
takes it over (a rename, no new blocks) before it makes a new one, so `run/` holds about one per
process alive at once, and a gateway restarted on a disk that is already full still has its blocks.
A file with a count is never taken over.

The block holds [u32 length][u32 crc32][JSON] padded with spaces: the JSON says whose count it is
(`worker`, `writer_id`, `role`), the count (`dropped`) and the count per reason. A block that does not
check out (a torn write at a power loss) is reported as unreadable, never as zero.

`airlock status` and `/metrics` read these files (`read_losses`): a status file, written by renaming
a new file over the old, is the first thing a full disk refuses."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("airlock.recorder")

LOSS_FILE_BYTES = 4096
SUFFIX = ".lost"
_HEADER = struct.Struct("<II")
_REASON_CHARS = 300  # a reason longer than this is cut, so that several always fit in the block
OTHER_REASONS = "other reasons (not all fit in the loss file)"


def loss_path(run_dir: str | os.PathLike[str], owner: str, role: str) -> Path:
    """The loss file of `owner` (a worker id or a writer id) in its `role` ("gateway" or "writer")."""
    return Path(run_dir) / f"{owner}.{role}{SUFFIX}"


def encode(content: dict[str, Any]) -> bytes:
    """`content` as one block of exactly LOSS_FILE_BYTES. Reasons are cut to length, and the rarest
    are folded into OTHER_REASONS while the block would overflow; the count itself is never cut."""
    reasons = sorted((content.get("reasons") or {}).items(), key=lambda kv: (-kv[1], kv[0]))
    kept = {reason[:_REASON_CHARS]: n for reason, n in reasons}
    while True:
        body = orjson.dumps({**content, "reasons": kept})
        if _HEADER.size + len(body) <= LOSS_FILE_BYTES:
            break
        rarest = min((r for r in kept if r != OTHER_REASONS), key=lambda r: kept[r], default=None)
        if rarest is None:  # only the fold is left: whoever wrote this many bytes of metadata is wrong
            raise ValueError("the loss count does not fit in its file")
        kept[OTHER_REASONS] = kept.get(OTHER_REASONS, 0) + kept.pop(rarest)
    block = _HEADER.pack(len(body), zlib.crc32(body)) + body
    return block + b" " * (LOSS_FILE_BYTES - len(block))


def decode(block: bytes) -> dict[str, Any] | None:
    """The content of a block, or None when it does not check out."""
    if len(block) < _HEADER.size:
        return None
    length, crc = _HEADER.unpack_from(block)
    body = block[_HEADER.size : _HEADER.size + length]
    if len(body) != length or zlib.crc32(body) != crc:
        return None
    try:
        content = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return content if isinstance(content, dict) else None


class LossFile:
    """One process's reserved loss-count file. `reserve` at start (raises OSError where even that is
    refused); `write` after each count. Where the reservation failed, `write` tries to make the file
    then (the disk may have room again) and otherwise only logs: the count stays in memory."""

    def __init__(self, path: str | os.PathLike[str], worker: str, writer_id: str, role: str) -> None:
        self.path = Path(path)
        self.identity = {"worker": worker, "writer_id": writer_id, "role": role}
        self._fd = -1
        self._closed = False  # closed after a reservation: the block at `path` is ours
        self._unwritten_logged = False

    @property
    def reserved(self) -> bool:
        return self._fd >= 0

    def reserve(self) -> None:
        """Take over a spare (see the module) or make the file, at its full size with a count of zero,
        synced to disk, and locked. Raises OSError where the disk refuses even that."""
        if self._fd >= 0:
            return
        if self._closed:  # a count after `close` (a late record at shutdown): back into our own block
            fd = _lock_whole(self.path)
            if fd is not None:
                self._fd = fd
                return
        fd = self._take_spare()
        if fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new name of ours: nobody else holds it
        try:
            _pwrite_all(fd, encode(self._content(0, {})))
            os.fsync(fd)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                self.path.unlink()  # a file short of its block would need new blocks later
            raise
        self._fd = fd

    def _take_spare(self) -> int | None:
        """The locked fd of a spare renamed to our name, or None when there is none."""
        for path in sorted(self.path.parent.glob(f"*{SUFFIX}")):
            if path == self.path:
                continue
            fd = _lock_whole(path)
            if fd is None:
                continue  # held by a live process, or not a whole block
            try:
                content = decode(os.pread(fd, LOSS_FILE_BYTES, 0))
                if content is None or content.get("dropped") != 0:
                    raise BlockingIOError  # a count (or a damaged one) stays where it is
                os.rename(path, self.path)
            except OSError:
                os.close(fd)
                continue
            return fd
        return None

    def write(self, dropped: int, reasons: dict[str, int]) -> bool:
        """Put the count in the file; False (logged once) where the file could not be made."""
        if self._fd < 0:
            try:
                self.reserve()
            except OSError as e:
                if not self._unwritten_logged:
                    self._unwritten_logged = True
                    log.error("the loss count cannot be kept on disk (%s): %s", self.path, e.strerror or e)
                return False
        try:
            _pwrite_all(self._fd, encode(self._content(dropped, reasons)))
        except OSError as e:  # not expected on a reserved block; the count is still in memory
            log.error("the loss count was not written to %s: %s", self.path, e.strerror or e)
            return False
        return True

    def close(self) -> None:
        """Close (and unlock) the file: with a count it stays for `airlock status`, without one as a spare."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._closed = True

    def _content(self, dropped: int, reasons: dict[str, int]) -> dict[str, Any]:
        return {**self.identity, "pid": os.getpid(), "dropped": dropped, "reasons": reasons, "updated_at": time.time()}


def _lock_whole(path: Path) -> int | None:
    """`path` opened and locked, if no live process holds it and it is a whole block; else None."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None  # taken over, or removed, meanwhile
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != os.stat(path).st_ino or os.fstat(fd).st_size != LOSS_FILE_BYTES:
            raise BlockingIOError  # renamed under us, or not a whole block
    except OSError:
        os.close(fd)
        return None
    return fd


def _pwrite_all(fd: int, block: bytes) -> None:
    view = memoryview(block)
    offset = 0
    while offset < len(block):
        offset += os.pwrite(fd, view[offset:], offset)


@dataclass
class Losses:
    """What the loss files of one data directory say, summed; per file in `files`."""

    dropped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)  # each counting file's content, with its "path"
    unreadable: list[str] = field(default_factory=list)  # files whose block does not check out

    def of(self, writer_id: str, worker: str | None) -> tuple[int, dict[str, int]]:
        """Records counted lost (and why) by writer `writer_id` and by the request path of its
        `worker`: the same scope as the `dropped` of that writer's status file."""
        total = 0
        reasons: dict[str, int] = {}
        for f in self.files:
            if (f.get("role") == "writer" and f.get("writer_id") == writer_id) or (
                f.get("role") == "gateway" and f.get("worker") == (worker or writer_id)
            ):
                total += int(f.get("dropped") or 0)
                for reason, n in (f.get("reasons") or {}).items():
                    reasons[reason] = reasons.get(reason, 0) + int(n)
        return total, reasons


def read_losses(run_dir: str | os.PathLike[str]) -> Losses:
    """Every loss file in `run_dir`, summed."""
    out = Losses()
    folder = Path(run_dir)
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        try:
            block = path.read_bytes()
        except FileNotFoundError:
            continue  # a clean stop removed it meanwhile
        except OSError as e:
            out.unreadable.append(f"{path.name}: {e.strerror or e}")
            continue
        if not block:
            continue  # made by a process that died before reserving it: it holds no count
        content = decode(block)
        if content is None:  # read in the middle of a rewrite, perhaps: once more before calling it damaged
            with contextlib.suppress(OSError):
                content = decode(path.read_bytes())
        if content is None:
            out.unreadable.append(f"{path.name}: damaged")
            continue
        dropped = int(content.get("dropped") or 0)
        if not dropped:
            continue  # a live process that lost nothing, or a spare
        out.dropped += dropped
        for reason, n in (content.get("reasons") or {}).items():
            out.reasons[reason] = out.reasons.get(reason, 0) + int(n)
        out.files.append({**content, "path": str(path)})
    return out
