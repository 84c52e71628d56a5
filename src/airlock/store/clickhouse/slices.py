"""SliceCandidates on ClickHouse: the spans of a window that match the filters, with the columns the
slice finder counts over (store/slices.py), filtered with the SpanQuery's SQL (clickhouse/query.py).

Every span column exists in the table, so "a column no span holds" is one that no selected span has a
value in; each free attribute key found in the selected spans' maps becomes a column attributes.<key>.
Rows come in start order (ties by span id)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from airlock.query.fields import ATTR_PREFIX
from airlock.record.schema import SPAN_SCHEMA
from airlock.store.clickhouse.query import Binds, filter_sql
from airlock.store.clickhouse.schema import SPANS
from airlock.store.clickhouse.transport import ClickHouseTransport, quoted

if TYPE_CHECKING:
    from airlock.query.spec import Filter


_START, _SPAN = "__order_start_ns", "__order_span_id"  # the row order's keys, dropped before answering


class ClickHouseSliceCandidates:
    def __init__(self, transport: ClickHouseTransport) -> None:
        self.transport = transport

    def candidate_spans(
        self,
        since_ns: int | None,
        until_ns: int | None,
        where: Sequence[Filter],
        measures: Sequence[str],
        dimensions: Sequence[str],
    ) -> pa.Table:
        binds = Binds()
        condition = filter_sql(since_ns, until_ns, where, binds)
        wanted = [c for c in dict.fromkeys([*measures, *dimensions]) if c in SPAN_SCHEMA.names]
        held = ", ".join(f"countIf({quoted(c)} IS NOT NULL) AS h{i}" for i, c in enumerate(wanted))
        stats = self.transport.query_rows(
            f"SELECT count() AS n, groupUniqArrayArray(mapKeys(attributes)) AS keys"
            f"{', ' + held if held else ''} FROM {SPANS} WHERE {condition}",
            binds.params,
        )[0]
        if not stats["n"]:
            return pa.table({})
        kept = [c for i, c in enumerate(wanted) if stats[f"h{i}"]]
        dims = set(dimensions)
        keys = sorted(str(k) for k in stats["keys"])
        selects = [f"{quoted(c)} AS {quoted(c)}" for c in kept]
        for key in keys:
            k = binds(key, "String")
            selects.append(f"if(mapContains(attributes, {k}), attributes[{k}], NULL) AS {quoted(ATTR_PREFIX + key)}")
        if not selects:
            return pa.table({})
        # sorted here, not by ClickHouse: an ORDER BY over every selected column cost it ten times the scan
        selects += [f"start_ns AS {quoted(_START)}", f"span_id AS {quoted(_SPAN)}"]
        table = self.transport.query_arrow(f"SELECT {', '.join(selects)} FROM {SPANS} WHERE {condition}", binds.params)
        table = table.take(pc.sort_indices(table, [(_START, "ascending"), (_SPAN, "ascending")]))
        table = table.drop_columns([_START, _SPAN])
        columns: dict[str, pa.Array] = {}
        for name in table.column_names:
            column = table.column(name)
            recorded = SPAN_SCHEMA.field(name).type if name in SPAN_SCHEMA.names else pa.string()
            if pa.types.is_dictionary(column.type):
                column = column.cast(column.type.value_type)
            column = column.cast(recorded)
            if (name in dims or name.startswith(ATTR_PREFIX)) and pa.types.is_string(recorded):
                column = pc.dictionary_encode(column)
            columns[name] = column
        # measures first, then dimensions, then attributes (the embedded order)
        order = [c for c in measures if c in columns and c not in dims]
        order += [c for c in dimensions if c in columns] + [ATTR_PREFIX + k for k in keys]
        return pa.table({name: columns[name] for name in order})
