"""Content-addressed payload store: blobs/ab/cd/<sha256>.zst, zstd-compressed, written once."""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path

import zstandard


class BlobCorrupt(Exception):
    """A stored blob whose bytes no longer hash to its name."""


class FileBlobStore:
    def __init__(self, root: Path, level: int = 3, remember: int = 65_536) -> None:
        self.root = root
        self._level = level
        self._known: OrderedDict[str, None] = OrderedDict()  # recently written or seen digests
        self._remember = remember
        self.bytes_in = 0
        self.bytes_stored = 0
        self.deduplicated = 0

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest[2:4] / f"{digest}.zst"

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        self.bytes_in += len(data)
        if digest in self._known:
            self._known.move_to_end(digest)
            self.deduplicated += 1
            return digest
        path = self.path(digest)
        if path.exists():
            self.deduplicated += 1
        else:
            compressed = zstandard.ZstdCompressor(level=self._level).compress(data)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                f.write(compressed)
            os.replace(tmp, path)
            self.bytes_stored += len(compressed)
        self._known[digest] = None
        if len(self._known) > self._remember:
            self._known.popitem(last=False)
        return digest

    def has(self, digest: str) -> bool:
        return self.path(digest).exists()

    def get(self, digest: str) -> bytes:
        """The original bytes, verified against their hash."""
        try:
            compressed = self.path(digest).read_bytes()
        except FileNotFoundError:
            raise KeyError(digest) from None
        data = zstandard.ZstdDecompressor().decompress(compressed)
        if hashlib.sha256(data).hexdigest() != digest:
            raise BlobCorrupt(f"blob {digest} fails its hash check")
        return data

    def resolve(self, prefix: str) -> str:
        """The full digest for a unique prefix of at least 8 hex characters."""
        prefix = prefix.lower()
        if len(prefix) == 64:
            return prefix
        if len(prefix) < 8:
            raise KeyError(f"give at least 8 characters of the hash, not {prefix!r}")
        folder = self.root / prefix[:2] / prefix[2:4]
        hits = sorted(p.name[:-4] for p in folder.glob(f"{prefix}*.zst")) if folder.exists() else []
        if len(hits) != 1:
            raise KeyError(f"{len(hits)} blobs match {prefix!r}")
        return hits[0]
