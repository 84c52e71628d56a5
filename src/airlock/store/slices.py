"""What the slice finder reads from the record: for the spans in a window that match the filters, the
columns it counts over, as one Arrow table. The statistics stay in airlock.slices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import pyarrow as pa

if TYPE_CHECKING:
    from airlock.query.spec import Filter


class SliceCandidates(Protocol):
    def candidate_spans(
        self,
        since_ns: int | None,
        until_ns: int | None,
        where: Sequence[Filter],
        measures: Sequence[str],
        dimensions: Sequence[str],
    ) -> pa.Table:
        """One row per span with start_ns in [since_ns, until_ns) (either bound may be None) matching every
        filter (as `airlock query` reads them), in a stable order.

        Columns: each span column named in `measures`, as recorded; each one named in `dimensions`,
        dictionary-encoded; and every free attribute, dictionary-encoded, named "attributes.<key>"
        (airlock.query.fields.ATTR_PREFIX). A column that no span holds is left out; one that only some
        spans hold is null on the others. A name in both lists is returned as a dimension. An empty table
        (no rows, possibly no columns) when nothing is recorded or nothing matches. Raises QueryError for
        a filter that cannot be evaluated, StoreError when the store fails."""
        ...
