"""`airlock query`: filter and group spans by any column or attribute, over a columnar query copy."""

from airlock.query.copies import CopySet, ensure_copies
from airlock.query.engine import MEASURES, SORTS, Filter, QueryError, QueryResult, QuerySpec, run_query

__all__ = [
    "MEASURES",
    "SORTS",
    "CopySet",
    "Filter",
    "QueryError",
    "QueryResult",
    "QuerySpec",
    "ensure_copies",
    "run_query",
]
