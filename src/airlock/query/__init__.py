"""`airlock query`: filter and group spans by any column or attribute, through a SpanQuery store."""

from airlock.query.engine import run_query
from airlock.query.spec import MEASURES, SORTS, Filter, QueryError, QueryResult, QuerySpec

__all__ = ["MEASURES", "SORTS", "Filter", "QueryError", "QueryResult", "QuerySpec", "run_query"]
