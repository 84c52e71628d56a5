"""The recorder's SegmentSink on ClickHouse: each writer batch is four inserts, in the embedded store's
order (blob index, hops, spans), then one row in `batches` that says the whole batch landed.

A retried batch never duplicates rows: every insert carries the deduplication token <writer>.<seq>, and
the tables keep a deduplication window (non_replicated_deduplication_window; ReplicatedMergeTree keeps
one by default), so the engine drops a second insert of a block it has seen under that token. A
ReplacingMergeTree key would do it too, but only after merges: readers would need FINAL to agree.

`covers` reads `batches`, not the spans: a batch whose spans cross midnight is two parts, and a failure
between them leaves some spans in; only the batches row, inserted last, says all are. `discard_partial`
(the writer's recovery of a dead writer's batch, replayed under the recovering writer's own id) deletes
that batch's rows with a lightweight DELETE.

The writer flushes one batch each `segment_max_records` records (default 50,000) or
`segment_max_age_s` seconds (default 1.0), whichever comes first: at 5,000 records a second per replica
that is one batch a second of about 5,000 spans, i.e. four inserts a second per replica (blob index,
hops, spans, batches), thousands of rows each, inside what MergeTree wants (inserts of at least ~1,000
rows, about one a second per table). Raise segment_max_age_s with more replicas per database."""

from __future__ import annotations

import pyarrow as pa

from airlock.errors import StoreError, StoreUnavailable
from airlock.store.clickhouse.schema import BATCHES, BLOB_INDEX, HOPS, SPANS
from airlock.store.clickhouse.transport import ClickHouseTransport


def with_batch(table: pa.Table, writer_id: str, seq: int) -> pa.Table:
    """The table with the writer_id and seq columns of the batch it belongs to."""
    n = table.num_rows
    table = table.replace_schema_metadata(None)
    return table.append_column("writer_id", pa.array([writer_id] * n, pa.string())).append_column(
        "seq", pa.array([seq] * n, pa.int64())
    )


class ClickHouseSegmentSink:
    """SegmentSink (store/interface.py) writing to a migrated ClickHouse database."""

    def __init__(self, transport: ClickHouseTransport) -> None:
        self.transport = transport

    def write(
        self, writer_id: str, seq: int, spans: pa.Table, hops: pa.Table, blob_index: pa.Table | None = None
    ) -> None:
        """Insert the batch (idempotent under retry); StoreUnavailable if ClickHouse fails, so that the
        writer keeps its write-ahead file and tries again."""
        token = f"{writer_id}.{seq}"
        index_rows = blob_index.num_rows if blob_index is not None else 0
        try:
            if blob_index is not None:
                self.transport.insert_arrow(BLOB_INDEX, with_batch(blob_index, writer_id, seq), dedup_token=token)
            self.transport.insert_arrow(HOPS, with_batch(hops, writer_id, seq), dedup_token=token)
            self.transport.insert_arrow(SPANS, with_batch(spans, writer_id, seq), dedup_token=token)
            marker = pa.table(
                {
                    "writer_id": [writer_id],
                    "seq": pa.array([seq], pa.int64()),
                    "spans": pa.array([spans.num_rows], pa.uint64()),
                    "hops": pa.array([hops.num_rows], pa.uint64()),
                    "blob_index": pa.array([index_rows], pa.uint64()),
                }
            )
            self.transport.insert_arrow(BATCHES, marker, dedup_token=token)
        except StoreUnavailable:
            raise
        except StoreError as e:
            raise StoreUnavailable(f"writing batch {token} to ClickHouse: {e}") from e

    def covers(self, writer_id: str, seq: int) -> bool:
        """Whether the batch's every insert is in."""
        rows = self.transport.query_rows(
            f"SELECT count() AS n FROM {BATCHES} WHERE writer_id = {{w:String}} AND seq = {{s:Int64}}",
            {"w": writer_id, "s": seq},
        )
        return bool(rows and rows[0]["n"])

    def discard_partial(self, writer_id: str, seq: int) -> None:
        """Delete the rows of a batch that did not land whole (nothing if it did)."""
        if self.covers(writer_id, seq):
            return
        for table in (SPANS, HOPS, BLOB_INDEX):
            self.transport.command(
                f"DELETE FROM {table} WHERE writer_id = {{w:String}} AND seq = {{s:Int64}}",
                {"w": writer_id, "s": seq},
            )

    def compact(self, writer_id: str, min_segments: int) -> int:
        """Nothing to do: ClickHouse merges parts itself."""
        return 0
