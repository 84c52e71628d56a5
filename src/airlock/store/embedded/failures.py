"""The embedded backend's libraries' failures (DuckDB, pyarrow, SQLite, the file system) as the
errors.StoreError family, so that no caller above airlock.store catches a storage library's exception."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import pyarrow as pa

from airlock.errors import StoreError, StoreUnavailable


@contextmanager
def store_errors(what: str) -> Iterator[None]:
    """Run the block; a read or write that cannot be done raises StoreUnavailable, any other failure of
    the libraries StoreError, each naming `what` was being done."""
    try:
        yield
    except (duckdb.IOException, sqlite3.OperationalError, OSError) as e:
        raise StoreUnavailable(f"{what}: {e}") from e
    except (duckdb.Error, sqlite3.Error, pa.ArrowException) as e:
        raise StoreError(f"{what}: {e}") from e
