"""The reading side of payloads on an S3-compatible store: a digest is located through the blob index
(a `BlobLocator`: the embedded index segments, or the ClickHouse blob_index table), its frame read
with one ranged GET and verified against the sha256, as the embedded reader does from a local pack."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from airlock.errors import BlobCorrupt
from airlock.store.embedded.blobs import blob_from, frame_contents, valid_prefix
from airlock.store.interface import BlobLocator
from airlock.store.s3.bucket import is_pack_name

_DIGEST = re.compile(r"[0-9a-f]{64}")


class PackReads(Protocol):
    """Byte ranges of packs (S3Bucket)."""

    def read_pack(self, pack: str, offset: int, length: int) -> bytes | None: ...


class S3PayloadReader:
    """PayloadReader (and replay's Payloads) over packs in a bucket, located through a BlobLocator."""

    def __init__(self, bucket: PackReads, locator: BlobLocator) -> None:
        self.bucket = bucket
        self.locator = locator

    def get_many(self, digests: Sequence[str]) -> dict[str, bytes | BlobCorrupt]:
        """Each digest found, with its verified bytes or the corruption found; missing ones (and
        strings that are not a sha256 in hex) are absent. Payloads sharing a frame cost one GET.
        StoreUnavailable when the bucket (or the locator's store) cannot be read."""
        wanted = [d for d in dict.fromkeys(digests) if _DIGEST.fullmatch(d)]
        if not wanted:
            return {}
        frames: dict[tuple[str, int, int], list[tuple[str, int, int]]] = {}
        out: dict[str, bytes | BlobCorrupt] = {}
        for digest, location in self.locator.locate(wanted).items():
            _, pack, frame_offset, frame_length, inner, length = location
            place = (str(pack), int(frame_offset), int(frame_length))
            if not is_pack_name(place[0]) or min(place[1], place[2], int(inner), int(length)) < 0:
                out[digest] = BlobCorrupt(f"blob {digest}: its index row names no pack of this store ({pack!r})")
                continue
            frames.setdefault(place, []).append((digest, int(inner), int(length)))
        for (pack, frame_offset, frame_length), blobs in frames.items():
            frame = self.bucket.read_pack(pack, frame_offset, frame_length)
            contents: bytes | None = None  # decompressed once for all its payloads
            for digest, inner, length in blobs:
                try:
                    if frame is None:
                        raise BlobCorrupt(f"blob {digest}: its pack {pack} is missing")
                    if len(frame) < frame_length:
                        raise BlobCorrupt(f"blob {digest}: its pack {pack} ends before the frame its index names")
                    if contents is None:
                        contents = frame_contents(frame, digest)
                    out[digest] = blob_from(contents, digest, inner, length)
                except BlobCorrupt as e:
                    out[digest] = e
        return out

    def get(self, digest: str) -> bytes:
        """The verified bytes of a payload; KeyError when it is not stored, BlobCorrupt when damaged."""
        found = self.get_many([digest]).get(digest)
        if found is None:
            raise KeyError(digest)
        if isinstance(found, BlobCorrupt):
            raise found
        return found

    def resolve(self, prefix: str) -> str:
        """The full digest for a unique prefix of at least 8 hex characters (KeyError otherwise)."""
        return self.locator.resolve(valid_prefix(prefix))
