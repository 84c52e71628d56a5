"""What compaction keeps once the sampler has decided: plugged into ParquetSegments when sampling is
on. Compaction merges only segments the sampler has read (so its cursor never points inside a merged
file), drops the spans and hops of traces it dropped (unless in the replay reserve), and writes each
kept trace's adjusted count and reason into airlock.sample.rate and airlock.sample.reason. A dropped
trace kept for the replay reserve gets adjusted count 0 and reason "replay reserve": it stands for no
trace in an estimate (the ledger weights its lines by the adjusted count)."""

from __future__ import annotations

import sqlite3

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from airlock.store.embedded import DataDir
from airlock.store.embedded.sampling import trace_weights_sql


class SampledRetention:
    def __init__(self, data: DataDir) -> None:
        self.data = data

    def compactable_through(self, writer_id: str) -> int:
        """The last segment of this writer the sampler has read and decided every trace begun in (-1: none)."""
        try:
            conn = sqlite3.connect(self.data.state_db, timeout=10.0)
            try:
                row = conn.execute("SELECT decided_seq FROM sampling_cursor WHERE writer = ?", (writer_id,)).fetchone()
            finally:
                conn.close()
        except sqlite3.OperationalError:  # no sampler has run yet (its tables do not exist)
            return -1
        return int(row[0]) if row else -1

    def retain(self, spans: pa.Table, hops: pa.Table) -> tuple[pa.Table, pa.Table]:
        if spans.num_rows == 0:
            return spans, hops
        ids = pa.table({"trace_id": pc.unique(spans.column("trace_id"))})
        try:
            verdicts = self._verdicts(ids)
        except duckdb.IOException:  # the sampler merged its files under us: list them again
            verdicts = self._verdicts(ids)
        if verdicts is None or verdicts.num_rows == 0:
            return spans, hops
        gone = verdicts.filter(pc.and_(pc.invert(verdicts["keep"]), pc.invert(verdicts["reserve"])))["trace_id"]
        spans = spans.filter(pc.invert(pc.is_in(spans["trace_id"], gone)))
        hops = hops.filter(pc.invert(pc.is_in(hops["trace_id"], gone)))
        # Every span that stays carries how many traces its trace stands for: the adjusted count of a kept
        # trace, 0 for one kept only as replay reserve or only for a late error.
        return _stamp(spans, verdicts), hops

    def _verdicts(self, ids: pa.Table) -> pa.Table | None:
        """Per trace among `ids` that the sampler decided: kept?, in the reserve?, weight and reason."""
        weights = trace_weights_sql(self.data)
        if weights is None:
            return None
        con = duckdb.connect(":memory:")
        try:
            con.register("ids", ids)
            return con.sql(
                f"""SELECT w.trace_id, w.keep, w.reserve, w.weight AS rate,
                           coalesce(w.reason, CASE WHEN w.reserve THEN 'replay reserve' ELSE 'dropped' END) AS reason
                    FROM ({weights}) w JOIN ids USING (trace_id)"""
            ).to_arrow_table()
        finally:
            con.close()


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
