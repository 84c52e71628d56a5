"""What compaction keeps once the sampler has decided: plugged into ParquetSegments when sampling is
on. Compaction merges only segments the sampler has read (so its cursor never points inside a merged
file), drops the spans and hops of traces it dropped (unless in the replay reserve), and writes each
kept trace's adjusted count and reason into airlock.sample.rate and airlock.sample.reason. A dropped
trace kept for the replay reserve gets adjusted count 0 and reason "replay reserve": it stands for no
trace in an estimate (the ledger weights its lines by the adjusted count)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from airlock.store.embedded.layout import DataDir
from airlock.store.embedded.sampling import EmbeddedRetentionReads
from airlock.store.sampling import RetentionReads


class SampledRetention:
    """The SegmentRetention compaction asks; `reads` is where the sampler's verdicts come from (the
    embedded store on `data` by default)."""

    def __init__(self, data: DataDir, reads: RetentionReads | None = None) -> None:
        self.data = data
        self.reads = reads or EmbeddedRetentionReads(data)

    def compactable_through(self, writer_id: str) -> int:
        """The last segment of this writer the sampler has read and decided every trace begun in (-1: none)."""
        return self.reads.decided_through(writer_id)

    def retain(self, spans: pa.Table, hops: pa.Table) -> tuple[pa.Table, pa.Table]:
        if spans.num_rows == 0:
            return spans, hops
        verdicts = self.reads.verdicts(pc.unique(spans.column("trace_id")))
        if verdicts is None or verdicts.num_rows == 0:
            return spans, hops
        gone = verdicts.filter(pc.and_(pc.invert(verdicts["keep"]), pc.invert(verdicts["reserve"])))["trace_id"]
        spans = spans.filter(pc.invert(pc.is_in(spans["trace_id"], gone)))
        hops = hops.filter(pc.invert(pc.is_in(hops["trace_id"], gone)))
        # Every span that stays carries how many traces its trace stands for: the adjusted count of a kept
        # trace, 0 for one kept only as replay reserve or only for a late error.
        return _stamp(spans, verdicts), hops


def _stamp(spans: pa.Table, kept: pa.Table) -> pa.Table:
    """Kept traces' spans carry their adjusted count and reason (a value already there is left)."""
    if kept.num_rows == 0 or spans.num_rows == 0:
        return spans
    where = pc.index_in(spans["trace_id"], value_set=kept["trace_id"])
    rate = pc.take(kept["rate"], where)
    reason = pc.take(kept["reason"], where)
    for column, values in (("airlock.sample.rate", rate), ("airlock.sample.reason", reason)):
        i = spans.schema.get_field_index(column)
        if i < 0:
            continue
        current = spans.column(i)
        spans = spans.set_column(i, column, pc.coalesce(current, values.cast(current.type)))
    return spans
