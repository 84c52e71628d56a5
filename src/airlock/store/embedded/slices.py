"""The embedded SliceCandidates: the query copies' columns read with pyarrow, the window and filters
applied with the same SQL as the embedded SpanQuery (store.embedded.query_engine)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from airlock.query.fields import ATTR_PREFIX
from airlock.store.embedded.copies import CopySet, ensure_copies
from airlock.store.embedded.failures import store_errors
from airlock.store.embedded.layout import DataDir
from airlock.store.embedded.query_engine import Fields, filter_sql, parquet_listing, retried_once

if TYPE_CHECKING:
    from airlock.query.spec import Filter


class ParquetSliceCandidates:
    def __init__(self, data: DataDir) -> None:
        self.data = data

    def candidate_spans(
        self,
        since_ns: int | None,
        until_ns: int | None,
        where: Sequence[Filter],
        measures: Sequence[str],
        dimensions: Sequence[str],
    ) -> pa.Table:
        with store_errors("slice candidates"):
            return retried_once(lambda: self._candidates(since_ns, until_ns, where, measures, dimensions))

    def _candidates(
        self,
        since_ns: int | None,
        until_ns: int | None,
        where: Sequence[Filter],
        measures: Sequence[str],
        dimensions: Sequence[str],
    ) -> pa.Table:
        copies = ensure_copies(self.data)
        if not copies.paths:
            return pa.table({})
        columns = copies.columns()
        dims = [c for c in dimensions if c in columns] + sorted(c for c in columns if c.startswith(ATTR_PREFIX))
        kept_measures = [c for c in measures if c in columns]
        parts = []
        for path in copies.paths:
            names = set(pq.read_schema(path).names)
            wanted = list(dict.fromkeys(c for c in (*kept_measures, *dims) if c in names))
            parts.append(pq.read_table(path, columns=wanted, read_dictionary=dims))
        table = pa.concat_tables(parts, promote_options="permissive")
        if where or since_ns is not None or until_ns is not None:
            table = table.filter(_selected(copies, columns, since_ns, until_ns, where))
        return table


def _selected(
    copies: CopySet, columns: set[str], since_ns: int | None, until_ns: int | None, where: Sequence[Filter]
) -> pa.Array:
    """Which rows of the copies (in order) the window and the filters select."""
    condition, params = filter_sql(since_ns, until_ns, where, Fields(columns))
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET preserve_insertion_order = true")
        listing = parquet_listing(copies)
        sql = f"SELECT coalesce({condition}, false) AS keep FROM read_parquet([{listing}], union_by_name=true)"
        return pa.array(np.asarray(con.execute(sql, params).fetchnumpy()["keep"], dtype=bool))
    finally:
        con.close()
