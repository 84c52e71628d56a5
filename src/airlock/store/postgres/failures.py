"""psycopg's failures as the errors.StoreError family, as store/embedded/failures.py does for SQLite: a
constraint PostgreSQL refuses (a unique key taken, say) or a transaction it rolled back because another
one won a race (serialization failure, deadlock) is a StoreConflict; anything else (the server down or
restarting, a connection dropped, a query refused) is StoreUnavailable."""

from __future__ import annotations

import psycopg
import psycopg.errors

from airlock.errors import StoreConflict, StoreError, StoreUnavailable

# The errors that mean "another process got there first": retrying the operation on fresh state may
# succeed, and nothing this one did was kept.
_LOST_RACE = (psycopg.IntegrityError, psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)


def _message(e: psycopg.Error) -> str:
    """The server's primary message, else the first line of psycopg's (which may add DETAIL lines)."""
    primary = e.diag.message_primary
    if primary:
        return primary
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def postgres_failure(e: psycopg.Error, what: str) -> StoreError:
    """A StoreError for a failed psycopg call, naming what was being done (never the DSN, which may hold a
    password)."""
    if isinstance(e, _LOST_RACE):
        return StoreConflict(f"{what}: {_message(e)}")
    return StoreUnavailable(f"{what}: PostgreSQL: {type(e).__name__}: {_message(e)}")
