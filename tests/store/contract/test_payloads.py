"""The contract of the payload store, run against each backend: a PayloadSink whose index rows travel
in the writer's segments, and a PayloadReader that reads the payloads back through them, verified.

"embedded": PackWriter and BlobReader on a data directory. "s3": S3PackWriter and S3PayloadReader on
a bucket of moto's server, located through the same embedded index segments."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airlock.errors import BlobCorrupt
from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.store.embedded import BlobReader, DataDir, PackWriter, ParquetSegments
from airlock.store.interface import PayloadReader, PayloadSink


@dataclass
class PayloadStore:
    """One backend's sink and reader on one data directory's index segments."""

    data: DataDir
    sink: PayloadSink
    reader: PayloadReader
    damage: Callable[[], None]  # flips a byte near the end of every pack written so far
    seq: int = 0

    def flush(self) -> int:
        """Write the sink's pending index rows as the next segment, as the batch writer does; how many."""
        index = self.sink.index_table()
        ParquetSegments(self.data).write("w1", self.seq, SPAN_SCHEMA.empty_table(), HOP_SCHEMA.empty_table(), index)
        self.sink.index_written(index.num_rows)
        self.seq += 1
        return int(index.num_rows)


def _flip(raw: bytes) -> bytes:
    damaged = bytearray(raw)
    damaged[-3] ^= 0x55
    return bytes(damaged)


def _embedded(data: DataDir) -> PayloadStore:
    def damage() -> None:
        for pack in data.blobs.glob("*.pack"):
            pack.write_bytes(_flip(pack.read_bytes()))

    return PayloadStore(data, PackWriter(data.blobs, "w1"), BlobReader(data), damage)


def _s3(data: DataDir, request: pytest.FixtureRequest) -> PayloadStore:
    import boto3

    from airlock.store.s3 import S3PackWriter, S3PayloadReader, open_s3

    endpoint: str = request.getfixturevalue("s3_endpoint")
    name: str = request.getfixturevalue("s3_bucket")
    bucket = open_s3(endpoint, name, "test", "test", "us-east-1", "contract", max_attempts=1)
    raw: Any = boto3.session.Session().client(
        "s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )

    def damage() -> None:
        for item in raw.list_objects_v2(Bucket=name).get("Contents", []):
            body = raw.get_object(Bucket=name, Key=item["Key"])["Body"].read()
            raw.put_object(Bucket=name, Key=item["Key"], Body=_flip(body))

    return PayloadStore(data, S3PackWriter(bucket, "w1"), S3PayloadReader(bucket, BlobReader(data)), damage)


@pytest.fixture(params=["embedded", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> PayloadStore:
    data = DataDir.at(tmp_path)
    data.create()
    return _embedded(data) if request.param == "embedded" else _s3(data, request)


PAYLOADS = [b'{"messages": [{"role": "user", "content": "hi"}]}', b"", b"\x00\xff" * 3000, b"z" * 5_000_000]


def test_payloads_read_back_as_stored(store: PayloadStore) -> None:
    digests = store.sink.put_many(PAYLOADS)
    assert digests == [hashlib.sha256(p).hexdigest() for p in PAYLOADS]
    assert store.flush() == len(PAYLOADS)
    assert [store.reader.get(d) for d in digests] == PAYLOADS
    assert store.reader.get_many(digests) == dict(zip(digests, PAYLOADS, strict=True))
    store.sink.close()


def test_a_payload_is_stored_once_while_remembered(store: PayloadStore) -> None:
    first = store.sink.put_many([b"system prompt", b"answer one", b"system prompt"])
    assert first[0] == first[2]
    assert store.flush() == 2
    store.sink.put_many([b"system prompt", b"answer two"])
    assert store.flush() == 1
    store.sink.remember([hashlib.sha256(b"seen by an earlier run").hexdigest()])
    store.sink.put_many([b"seen by an earlier run"])
    assert store.flush() == 0


def test_index_rows_are_handed_out_once_and_put_back_on_failure(store: PayloadStore) -> None:
    digests = store.sink.put_many([b"one", b"two"])
    rows = store.sink.take_unlogged()
    assert sorted(r[0] for r in rows) == sorted(digests)
    assert store.sink.take_unlogged() == []
    store.sink.unlog(rows)  # the write-ahead append failed
    assert store.sink.take_unlogged() == rows
    assert store.flush() == 2 and store.sink.take_unlogged() == []


def test_rows_restored_from_a_write_ahead_file_reach_the_next_segment(store: PayloadStore) -> None:
    digests = store.sink.put_many([b"before the crash"])
    rows = store.sink.take_unlogged()
    store.flush()
    for segment in store.data.blob_index.glob("*.parquet"):  # the crash took the segment
        segment.unlink()
    assert store.reader.get_many(digests) == {}
    store.sink.restore([list(r) for r in rows])
    assert store.sink.take_unlogged() == rows and store.flush() == 1
    assert store.reader.get(digests[0]) == b"before the crash"


def test_unknown_digests_and_prefixes(store: PayloadStore) -> None:
    digests = store.sink.put_many([b"alpha", b"beta"])
    store.flush()
    with pytest.raises(KeyError):
        store.reader.get("0" * 64)
    assert store.reader.get_many(["0" * 64]) == {}
    assert store.reader.resolve(digests[1][:12]) == digests[1]
    for prefix in ("abc", "not-hex-at-all", ""):
        with pytest.raises(KeyError):
            store.reader.resolve(prefix)


def test_damaged_bytes_are_blob_corrupt(store: PayloadStore) -> None:
    (digest,) = store.sink.put_many([b"q" * 4000 + b"end"])
    store.flush()
    store.damage()
    found = store.reader.get_many([digest])
    assert isinstance(found[digest], BlobCorrupt)
    with pytest.raises(BlobCorrupt):
        store.reader.get(digest)
