from pathlib import Path

import pytest

from airlock.store.embedded.blobs import BlobCorrupt, PackBlobStore


def test_blobs_are_stored_once_and_read_back_verified(tmp_path: Path) -> None:
    store = PackBlobStore(tmp_path, "w1")
    payloads = [b"same", b"other " * 1000, b"same", b""]
    digests = store.put_many(payloads)
    assert digests[0] == digests[2]
    assert [store.get(d) for d in digests] == payloads  # readable before the index commit
    store.commit_index()
    store.put_many([b"same"])
    store.close()
    again = PackBlobStore(tmp_path, "w2")  # a new writer: dedup against the committed index
    assert again.put_many([b"same"]) == digests[:1] and again.deduplicated == 1
    assert again.get(digests[1]) == payloads[1] and again.resolve(digests[1][:10]) == digests[1]
    assert again._db.execute("SELECT count(*) FROM blobs").fetchone()[0] == 3
    again.close()
    assert sum(p.stat().st_size for p in tmp_path.glob("*.pack")) < 200  # the 6 kB blob compressed


def test_corrupt_pack_is_detected(tmp_path: Path) -> None:
    store = PackBlobStore(tmp_path, "w1")
    digest = store.put(b"x" * 5000 + b"tail")
    pack = next(tmp_path.glob("*.pack"))
    data = bytearray(pack.read_bytes())
    data[-3] ^= 0x55
    pack.write_bytes(bytes(data))
    with pytest.raises(BlobCorrupt):
        store.get(digest)
    with pytest.raises(KeyError):
        store.get("0" * 64)
    store.close()
