"""`airlock sample gc` on the ClickHouse record: the spans and hops of traces the sampler dropped
deleted (lightweight DELETE, a batch group at a time), and the blob index without released digests.

What differs from the embedded collector (store/embedded/sampling_gc.py), and why:
- Nothing is stamped: a kept trace's spans are not rewritten with its adjusted count, since every
  ClickHouse reader weights spans from `sample_decisions` (sampling.trace_weights_subquery), and an UPDATE
  mutation would rewrite every part. So `segments_rewritten` counts the writer batches that lost rows.
- Released payloads leave the blob index only: their bytes stay in the packs (in the object store on a
  scale-out deployment, where a pack is an immutable object shared by every blob of its batch), so
  `packs_rewritten` is 0 and the sizes before and after are of the frames the index still locates.
- `writers_stopped` cannot take the writers' locks: they are flocks on other nodes' disks. What the
  shared record shows of a live writer is a batch it wrote lately, so a batch in the last `quiet_s`
  seconds refuses (GatewayRunning); a gateway up but idle for longer is not seen, so gc is still to be
  run with every gateway of the record stopped.
- A payload is referenced while a span names it, or while its index row belongs to a batch not yet
  whole (a writer died mid-batch: its replay re-inserts the batch under the same deduplication token,
  so an index row deleted now would never come back)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from airlock.errors import GatewayRunning
from airlock.record.schema import PAYLOAD_COLUMNS
from airlock.store.clickhouse.schema import BATCHES, BLOB_INDEX, HOPS, SPANS
from airlock.store.clickhouse.transport import ClickHouseTransport, quoted
from airlock.store.sampling import PruneResult, ReleaseResult, Retain

_GROUP_SPANS = 10_000  # spans read per group of batches: their trace ids are bound as one parameter
_DELETE_IDS = 10_000  # ids bound in one DELETE


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def _as_strings(table: pa.Table) -> pa.Table:
    """String columns as plain strings (ClickHouse may answer LowCardinality ones dictionary-encoded)."""
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(field.type.value_type))
    return table


class ClickHouseRecordCollector:
    """RecordCollector over the tables (see the module's docstring)."""

    def __init__(self, transport: ClickHouseTransport, quiet_s: float = 60.0) -> None:
        self.transport = transport
        self.quiet_s = quiet_s

    @contextlib.contextmanager
    def writers_stopped(self) -> Iterator[None]:
        """GatewayRunning if a writer inserted a batch in the last `quiet_s` seconds (0: not checked)."""
        if self.quiet_s > 0:
            recent = self.transport.query_rows(
                f"SELECT count() AS n FROM {BATCHES} WHERE written_at > now() - toIntervalSecond({{s:Int64}})",
                {"s": int(self.quiet_s + 0.999)},
            )[0]
            if int(recent["n"]):
                raise GatewayRunning(
                    f"a writer recorded a batch in the last {self.quiet_s:g} s: stop every gateway of the record first"
                )
        yield

    def _batch_groups(self) -> Iterator[list[tuple[str, int]]]:
        """The whole batches, in groups of about _GROUP_SPANS spans."""
        rows = self.transport.query_rows(
            f"SELECT writer_id, seq, max(spans) AS n FROM {BATCHES} GROUP BY writer_id, seq ORDER BY writer_id, seq"
        )
        group: list[tuple[str, int]] = []
        size = 0
        for r in rows:
            group.append((str(r["writer_id"]), int(r["seq"])))
            size += int(r["n"])
            if size >= _GROUP_SPANS:
                yield group
                group, size = [], 0
        if group:
            yield group

    def _rows(self, table: str, columns: str, batches: list[tuple[str, int]]) -> pa.Table:
        return _as_strings(
            self.transport.query_arrow(
                f"SELECT {columns} FROM {table}"
                " WHERE (writer_id, seq) IN arrayZip({writers:Array(String)}, {seqs:Array(Int64)})",
                {"writers": [w for w, _ in batches], "seqs": [s for _, s in batches]},
            )
        )

    def prune_segments(self, retain: Retain) -> PruneResult:
        """Ask `retain` about each group of batches' spans and hops (their trace and span ids), and delete
        the rows of every trace it takes out, in those batches."""
        result = PruneResult()
        for batches in self._batch_groups():
            spans = self._rows(SPANS, "trace_id, span_id, writer_id, seq", batches)
            hops = self._rows(HOPS, "trace_id, span_id, writer_id, seq", batches)
            kept_spans, kept_hops = retain(spans, hops)
            gone = set(pc.unique(spans["trace_id"]).to_pylist()) - set(pc.unique(kept_spans["trace_id"]).to_pylist())
            gone |= set(pc.unique(hops["trace_id"]).to_pylist()) - set(pc.unique(kept_hops["trace_id"]).to_pylist())
            if not gone:
                continue
            gone_ids = pa.array(sorted(gone), pa.string())
            changed: set[tuple[Any, Any]] = set()
            for table in (spans, hops):
                hit = table.filter(pc.is_in(table["trace_id"], gone_ids))
                changed.update(zip(hit["writer_id"].to_pylist(), hit["seq"].to_pylist(), strict=True))
            result.spans_removed += int(pc.sum(pc.is_in(spans["trace_id"], gone_ids)).as_py() or 0)
            result.segments_rewritten += len(changed)
            for ids in _chunks(gone_ids.to_pylist(), _DELETE_IDS):
                for name in (SPANS, HOPS):
                    self.transport.command(
                        f"DELETE FROM {name} WHERE trace_id IN {{ids:Array(String)}}"
                        " AND (writer_id, seq) IN arrayZip({writers:Array(String)}, {seqs:Array(Int64)})",
                        {"ids": ids, "writers": [w for w, _ in batches], "seqs": [s for _, s in batches]},
                    )
        return result

    def referenced_payloads(self) -> set[str]:
        """Digests a span names, and those indexed by a batch not yet whole."""
        named = " UNION DISTINCT ".join(
            f"SELECT assumeNotNull({quoted(c)}) AS d FROM {SPANS} WHERE {quoted(c)} IS NOT NULL AND {quoted(c)} != ''"
            for c in PAYLOAD_COLUMNS
        )
        rows = self.transport.query_rows(
            f"SELECT d FROM ({named}) UNION DISTINCT SELECT digest AS d FROM {BLOB_INDEX}"
            f" WHERE (writer_id, seq) NOT IN (SELECT writer_id, seq FROM {BATCHES})"
        )
        return {str(r["d"]) for r in rows}

    def indexed_payloads(self) -> set[str]:
        return {str(r["digest"]) for r in self.transport.query_rows(f"SELECT DISTINCT digest FROM {BLOB_INDEX}")}

    def payload_bytes(self) -> int:
        """The payload frames the blob index locates, each once (the packs themselves are the payload
        store's: a local folder or an object store bucket, which this backend does not list)."""
        row = self.transport.query_rows(
            f"SELECT sum(frame_length) AS b FROM (SELECT DISTINCT pack, frame_offset, frame_length FROM {BLOB_INDEX})"
        )[0]
        return int(row["b"] or 0)

    def release_payloads(self, digests: set[str]) -> ReleaseResult:
        """The digests' index rows deleted (no writer deduplicates against them again, no reader finds
        them); their bytes stay in the packs (see the module's docstring)."""
        result = ReleaseResult(bytes_before=self.payload_bytes())
        for chunk in _chunks(sorted(digests), _DELETE_IDS):
            self.transport.command(f"DELETE FROM {BLOB_INDEX} WHERE digest IN {{ids:Array(String)}}", {"ids": chunk})
        result.bytes_after = self.payload_bytes()
        return result
