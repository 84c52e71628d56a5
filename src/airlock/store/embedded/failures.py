"""The embedded backend's libraries' failures (DuckDB, pyarrow, SQLite, the file system) as the
errors.StoreError family, so that no caller above airlock.store catches a storage library's exception."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import pyarrow as pa

from airlock.errors import StoreConflict, StoreError, StoreUnavailable


def sqlite_failure(e: sqlite3.Error, what: str) -> StoreError:
    """A StoreError for a failed SQLite call: a constraint is a conflict, anything else unavailability."""
    if isinstance(e, sqlite3.IntegrityError):
        return StoreConflict(f"{what}: {e}")
    return StoreUnavailable(f"{what}: {type(e).__name__}: {e}")


@contextmanager
def store_errors(what: str) -> Iterator[None]:
    """Run the block; a constraint SQLite refuses raises StoreConflict, any other failure of the
    libraries or the file system StoreUnavailable, each naming `what` was being done."""
    try:
        yield
    except sqlite3.Error as e:
        raise sqlite_failure(e, what) from e
    except (duckdb.Error, pa.ArrowException, OSError) as e:
        raise StoreUnavailable(f"{what}: {e}") from e
