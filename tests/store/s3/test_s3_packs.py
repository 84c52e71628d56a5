"""Payload packs on an S3-compatible store (moto's server on 127.0.0.1): the writer, the reader,
the bucket's failures, and a real BatchWriter writing through it while the endpoint goes away."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest
from s3_support import Forwarder, RowsLocator

from airlock.config.schema import Recorder as RecorderConfig
from airlock.errors import BlobCorrupt, ConfigError, StoreUnavailable
from airlock.record import BatchWriter, Recorder
from airlock.store.embedded import BlobReader, DataDir, DuckDBSpanReader, ParquetSegments
from airlock.store.s3 import S3Bucket, S3PackWriter, S3PayloadReader, open_s3


def keys(raw_s3: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in raw_s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_payloads_round_trip_through_one_object_per_pack(bucket: S3Bucket, raw_s3: Any) -> None:
    writer = S3PackWriter(bucket, "node-a_17_abc")
    payloads = [b'{"prompt": "hi"}', b"", b"x" * 5_000_000, bytes(range(256)) * 40]
    digests = writer.put_many(payloads)
    assert keys(raw_s3, bucket.bucket) == []  # nothing uploaded until rows are handed out
    rows = writer.take_unlogged()
    stored = keys(raw_s3, bucket.bucket)
    assert len(stored) == 1 and stored[0].startswith("eu/airlock/packs/node-a_17_abc/") and stored[0].endswith(".pack")
    assert {r[0] for r in rows} == set(digests) and len({(r[2], r[3]) for r in rows}) == 3  # the 5 MB one alone
    assert writer.index_table().num_rows == 4
    locator = RowsLocator()
    locator.add(rows)
    reader = S3PayloadReader(bucket, locator)
    assert [reader.get(d) for d in digests] == payloads
    assert reader.get_many([*digests, "0" * 64]) == dict(zip(digests, payloads, strict=True))
    assert reader.resolve(digests[0][:9].upper()) == digests[0]
    with pytest.raises(KeyError):
        reader.get("0" * 64)


def test_payloads_are_deduplicated_across_packs_and_writers(bucket: S3Bucket, raw_s3: Any) -> None:
    writer = S3PackWriter(bucket, "w1")
    a, b, c = writer.put_many([b"system prompt v7", b"first answer", b"system prompt v7"])
    assert a == c and writer.deduplicated == 1
    first = writer.take_unlogged()
    writer.put_many([b"system prompt v7", b"second answer"])
    second = writer.take_unlogged()
    assert [r[0] for r in first] == [a, b] and len(second) == 1 and second[0][0] != a
    assert first[0][1] != second[0][1]  # two packs, two objects
    assert len(keys(raw_s3, bucket.bucket)) == 2 and writer.uploaded == 2
    assert writer.index_table().num_rows == 3
    writer.index_written(3)
    assert writer.take_unlogged() == [] and writer.index_table().num_rows == 0

    # A new writer under the same id (a restart) warm-started from the index stores nothing again
    # and never overwrites the earlier run's packs.
    again = S3PackWriter(bucket, "w1")
    again.remember([r[0] for r in first + second])
    again.put_many([b"first answer", b"third answer"])
    assert again.deduplicated == 1 and len(again.take_unlogged()) == 1
    assert len(keys(raw_s3, bucket.bucket)) == 3


def test_a_damaged_or_missing_pack_is_blob_corrupt(bucket: S3Bucket, raw_s3: Any) -> None:
    writer = S3PackWriter(bucket, "w1")
    digests = writer.put_many([b"a" * 3000 + b"tail", b"another payload"])
    locator = RowsLocator()
    locator.add(writer.take_unlogged())
    (key,) = keys(raw_s3, bucket.bucket)
    reader = S3PayloadReader(bucket, locator)
    original = raw_s3.get_object(Bucket=bucket.bucket, Key=key)["Body"].read()

    damaged = bytearray(original)
    damaged[-3] ^= 0x55
    raw_s3.put_object(Bucket=bucket.bucket, Key=key, Body=bytes(damaged))
    found = reader.get_many(digests)
    assert all(isinstance(found[d], BlobCorrupt) for d in digests)
    with pytest.raises(BlobCorrupt):
        reader.get(digests[0])

    raw_s3.put_object(Bucket=bucket.bucket, Key=key, Body=original[:-10])  # cut short
    with pytest.raises(BlobCorrupt, match="ends before"):
        reader.get(digests[1])

    raw_s3.delete_object(Bucket=bucket.bucket, Key=key)
    with pytest.raises(BlobCorrupt, match="missing"):
        reader.get(digests[0])

    raw_s3.put_object(Bucket=bucket.bucket, Key=key, Body=original)
    assert reader.get(digests[1]) == b"another payload"


def test_a_dead_endpoint_is_store_unavailable_until_it_returns(forwarder: Forwarder, s3_bucket: str) -> None:
    bucket = open_s3(forwarder.url, s3_bucket, "test", "s3cr3t-never-shown", "us-east-1", max_attempts=1)
    bucket.check()
    writer = S3PackWriter(bucket, "w1")
    forwarder.set_down(True)
    with pytest.raises(StoreUnavailable) as refused:
        bucket.check()
    message = str(refused.value)
    assert forwarder.url in message and s3_bucket in message and "s3cr3t" not in message
    digests = writer.put_many([b"kept while the store is away", b"and this"])
    with pytest.raises(StoreUnavailable, match="uploading"):
        writer.take_unlogged()
    with pytest.raises(StoreUnavailable):
        writer.put_many([b"kept while the store is away", b"and this"], sync=True)  # the retry of the batch
    assert writer.deduplicated == 2
    with pytest.raises(StoreUnavailable):
        writer.index_table()

    forwarder.set_down(False)
    rows = writer.take_unlogged()
    assert sorted(r[0] for r in rows) == sorted(digests)  # once each: the retry added nothing
    assert writer.take_unlogged() == [] and writer.index_table().num_rows == 2
    locator = RowsLocator()
    locator.add(rows)
    reader = S3PayloadReader(bucket, locator)
    assert reader.get(digests[0]) == b"kept while the store is away"
    forwarder.set_down(True)
    with pytest.raises(StoreUnavailable, match="reading"):
        reader.get_many(digests)


def test_a_missing_bucket_is_named_by_check(s3_endpoint: str) -> None:
    bucket = open_s3(s3_endpoint, "no-such-bucket-here", "test", "test", max_attempts=1)
    with pytest.raises(StoreUnavailable, match=r"no-such-bucket-here.*no such bucket"):
        bucket.check()


@pytest.mark.parametrize("prefix", ["../other", "/abs", "a//b", "a/./b", "a/../b", "tab\t/", "ü/"])
def test_a_hostile_key_prefix_is_refused(s3_endpoint: str, prefix: str) -> None:
    with pytest.raises(ConfigError):
        open_s3(s3_endpoint, "b", "test", "test", prefix=prefix)


@pytest.mark.parametrize("writer_id", ["../w", "a/b", ".", "..", "", "w\n"])
def test_a_writer_id_that_is_not_one_name_is_refused(bucket: S3Bucket, writer_id: str) -> None:
    with pytest.raises(ValueError):
        S3PackWriter(bucket, writer_id)


def test_index_rows_and_digests_cannot_reach_keys_outside_the_packs(bucket: S3Bucket, raw_s3: Any) -> None:
    writer = S3PackWriter(bucket, "w1")
    (digest,) = writer.put_many([b"secret of another tenant"])
    (row,) = writer.take_unlogged()
    (key,) = keys(raw_s3, bucket.bucket)
    body = raw_s3.get_object(Bucket=bucket.bucket, Key=key)["Body"].read()
    for outside in ("outside.pack", "eu/outside.pack", "eu/airlock/w1.pack"):
        raw_s3.put_object(Bucket=bucket.bucket, Key=outside, Body=body)  # a valid frame, where no pack may be
    locator = RowsLocator()
    reader = S3PayloadReader(bucket, locator)
    for pack in ("../../outside.pack", "w1/../../../outside.pack", "/outside.pack", "../w1.pack", "w1/x/y.pack"):
        locator.rows[digest] = (digest, pack, *row[2:])
        found = reader.get_many([digest])[digest]
        assert isinstance(found, BlobCorrupt) and "names no pack" in str(found)
    locator.rows["../" + digest] = row
    assert reader.get_many(["../" + digest, digest[:10]]) == {}
    with pytest.raises(KeyError):
        reader.resolve("../eu/airlock")


def record(i: int) -> dict[str, Any]:
    return {
        "trace_id": f"{i:032x}",
        "span_id": f"{i:016x}",
        "request_id": f"{i:016x}",
        "kind": "model.chat",
        "start_ns": 1_000 + i,
        "end_ns": 2_000 + i,
        "status": "ok",
        "_payloads": {"airlock.payload.request": b'{"n": %d}' % i, "airlock.payload.response": b'{"shared": 1}'},
        "_response_format": "json",
        "_hops": [{"trace_id": f"{i:032x}", "span_id": f"{i:016x}", "attempt": 1, "upstream": "u", "outcome": "ok"}],
    }


def wait_until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert check()


def test_a_batch_writer_loses_nothing_while_uploads_fail(tmp_path: Path, forwarder: Forwarder, s3_bucket: str) -> None:
    bucket = open_s3(forwarder.url, s3_bucket, "test", "test", max_attempts=1)
    data = DataDir.at(tmp_path)
    data.create()
    rec = Recorder(RecorderConfig(segment_max_age_s=0.05), data, "w-s3", {})
    writer = BatchWriter(rec, S3PackWriter(bucket, "w-s3"), ParquetSegments(data))
    spans = DuckDBSpanReader(data)

    def recorded() -> int:
        return int(spans.sql("SELECT count(*) AS n FROM spans")[0]["n"])

    writer.start()
    try:
        for i in range(10):
            rec.submit(record(i))
        wait_until(lambda: recorded() == 10)
        forwarder.set_down(True)
        for i in range(10, 40):
            rec.submit(record(i))
        wait_until(lambda: rec.error is not None and "StoreUnavailable" in rec.error)
        time.sleep(0.2)  # a few retries against the dead endpoint
        assert recorded() == 10
        forwarder.set_down(False)
        wait_until(lambda: recorded() == 40 and rec.error is None)
    finally:
        writer.stop()
    assert rec.dropped == 0
    index = spans.sql("SELECT count(*) AS n, count(DISTINCT digest) AS digests FROM blob_index")[0]
    assert index == {"n": 41, "digests": 41}  # 40 requests and one shared response, each indexed once
    rows = spans.sql('SELECT "airlock.payload.request" AS req, "airlock.payload.response" AS resp FROM spans')
    reader = S3PayloadReader(bucket, BlobReader(data))
    found = reader.get_many([r["req"] for r in rows] + [rows[0]["resp"]])
    stored = sorted(v for v in found.values() if isinstance(v, bytes))
    assert stored == sorted([b'{"n": %d}' % i for i in range(40)] + [b'{"shared": 1}'])
    assert rows[0]["resp"] == hashlib.sha256(b'{"shared": 1}').hexdigest()


def test_a_full_pack_is_uploaded_by_put_many_itself(bucket: S3Bucket, raw_s3: Any) -> None:
    writer = S3PackWriter(bucket, "w1", pack_max_bytes=10_000)
    writer.put_many([b"small"])
    assert writer.uploaded == 0
    writer.put_many([os.urandom(12_000)])  # incompressible: the pack passes 10 kB, uploaded at once
    assert writer.uploaded == 1 and len(keys(raw_s3, bucket.bucket)) == 1
    writer.put_many([b"synced"], sync=True)
    assert writer.uploaded == 2 and len(writer.take_unlogged()) == 3
