from pathlib import Path

import pytest

from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.store.embedded import BlobCorrupt, BlobReader, DataDir, PackWriter, ParquetSegments


def flush(data: DataDir, writer: PackWriter, seq: int) -> None:
    index = writer.index_table()
    ParquetSegments(data).write(writer.writer_id, seq, SPAN_SCHEMA.empty_table(), HOP_SCHEMA.empty_table(), index)
    writer.index_written(index.num_rows)


def test_blobs_are_stored_once_and_read_back_verified(tmp_path: Path) -> None:
    data = DataDir.at(tmp_path)
    data.create()
    writer = PackWriter(data.blobs, "w1")
    payloads = [b"same", b"other " * 1000, b"same", b""]
    digests = writer.put_many(payloads)
    assert digests[0] == digests[2] and writer.deduplicated == 1
    assert writer.index_table().num_rows == 3
    flush(data, writer, 0)
    assert writer.index_table().num_rows == 0
    writer.put_many([b"same"])  # still in the window: not stored again
    assert writer.index_table().num_rows == 0
    writer.close()
    reader = BlobReader(data)
    assert [reader.get(d) for d in digests] == payloads
    assert reader.resolve(digests[1][:10]) == digests[1]
    with pytest.raises(KeyError):
        reader.get("0" * 64)
    with pytest.raises(KeyError):
        reader.resolve("zz")
    assert sum(p.stat().st_size for p in data.blobs.glob("*.pack")) < 200  # the 6 kB blob compressed


def test_a_new_writer_warm_started_from_the_index_deduplicates(tmp_path: Path) -> None:
    from airlock.store.embedded.blobs import recent_digests

    data = DataDir.at(tmp_path)
    data.create()
    first = PackWriter(data.blobs, "w1")
    digest = first.put_many([b"system prompt v7"])[0]
    flush(data, first, 0)
    first.close()
    second = PackWriter(data.blobs, "w2")
    second.remember(recent_digests(data, 1000))
    assert second.put_many([b"system prompt v7"]) == [digest] and second.deduplicated == 1
    assert second.index_table().num_rows == 0


def test_corrupt_pack_is_detected(tmp_path: Path) -> None:
    data = DataDir.at(tmp_path)
    data.create()
    writer = PackWriter(data.blobs, "w1")
    digest = writer.put_many([b"x" * 5000 + b"tail"])[0]
    flush(data, writer, 0)
    writer.close()
    pack = next(data.blobs.glob("*.pack"))
    raw = bytearray(pack.read_bytes())
    raw[-3] ^= 0x55
    pack.write_bytes(bytes(raw))
    with pytest.raises(BlobCorrupt):
        BlobReader(data).get(digest)
