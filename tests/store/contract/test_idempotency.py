"""The contract of IdempotencyKeys (airlock.store.limits), on every backend: claim, complete and
release, a different request under the same key, expiry, and racing claimers (exactly one wins)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from limit_stores import BACKENDS, store_opener

from airlock.errors import StoreConflict

T0 = 1_764_000_000.0


@pytest.fixture(params=BACKENDS)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    yield from store_opener(request, tmp_path)


@pytest.fixture
def keys(open_store: Callable[[], Any]) -> Any:
    return open_store()


def test_a_key_is_new_then_in_progress_then_completed_with_its_response(keys: Any) -> None:
    assert keys.claim("tools", "k1", "sha-a", 60, now=T0).state == "new"
    again = keys.claim("tools", "k1", "sha-a", 60, now=T0 + 1)
    assert again.state == "in_progress" and again.response is None
    keys.complete("tools", "k1", b'{"ok": true}', now=T0 + 2)
    done = keys.claim("tools", "k1", "sha-a", 60, now=T0 + 3)
    assert done.state == "completed" and done.response == b'{"ok": true}' and done.decided_by == "store"
    assert keys.claim("tools", "k1", "sha-a", 60, now=T0 + 4).response == b'{"ok": true}'  # as often as asked


def test_the_same_key_with_another_request_is_a_mismatch(keys: Any) -> None:
    assert keys.claim("tools", "k", "sha-a", 60, now=T0).state == "new"
    assert keys.claim("tools", "k", "sha-b", 60, now=T0) == keys.claim("tools", "k", "sha-c", 60, now=T0)
    assert keys.claim("tools", "k", "sha-b", 60, now=T0).state == "mismatch"
    keys.complete("tools", "k", b"first", now=T0)
    mismatch = keys.claim("tools", "k", "sha-b", 60, now=T0)
    assert mismatch.state == "mismatch" and mismatch.response is None  # another request never sees it


def test_a_released_claim_lets_the_retry_in(keys: Any) -> None:
    assert keys.claim("tools", "k", "sha-a", 60, now=T0).state == "new"
    keys.release("tools", "k", now=T0)  # the first attempt failed
    assert keys.claim("tools", "k", "sha-a", 60, now=T0).state == "new"
    keys.complete("tools", "k", b"done", now=T0)
    keys.release("tools", "k", now=T0)  # releasing a completed key leaves it completed
    assert keys.claim("tools", "k", "sha-a", 60, now=T0).state == "completed"
    keys.release("tools", "never-claimed", now=T0)  # nothing to release is not an error


def test_completing_a_key_not_in_progress_is_a_conflict(keys: Any) -> None:
    with pytest.raises(StoreConflict, match="not in progress"):
        keys.complete("tools", "never-claimed", b"x", now=T0)
    keys.claim("tools", "k", "sha-a", 60, now=T0)
    keys.complete("tools", "k", b"first", now=T0)
    with pytest.raises(StoreConflict):
        keys.complete("tools", "k", b"second", now=T0)
    assert keys.claim("tools", "k", "sha-a", 60, now=T0).response == b"first"
    keys.claim("tools", "late", "sha-a", 10, now=T0)
    with pytest.raises(StoreConflict):  # its claim expired: another attempt may hold the key by now
        keys.complete("tools", "late", b"x", now=T0 + 10)


def test_an_empty_response_is_a_response(keys: Any) -> None:
    keys.claim("tools", "k", "sha-a", 60, now=T0)
    keys.complete("tools", "k", b"", now=T0)
    assert keys.claim("tools", "k", "sha-a", 60, now=T0).response == b""


def test_keys_expire_after_their_ttl_in_progress_or_completed(keys: Any) -> None:
    assert keys.claim("tools", "stuck", "sha-a", 30, now=T0).state == "new"
    assert keys.claim("tools", "stuck", "sha-a", 30, now=T0 + 29.9).state == "in_progress"
    assert keys.claim("tools", "stuck", "sha-b", 30, now=T0 + 30).state == "new"  # forgotten: any request
    keys.claim("tools", "done", "sha-a", 30, now=T0)
    keys.complete("tools", "done", b"r", now=T0 + 1)
    assert keys.claim("tools", "done", "sha-a", 30, now=T0 + 29.9).state == "completed"
    assert keys.claim("tools", "done", "sha-a", 30, now=T0 + 30).state == "new"


def test_scopes_keep_their_keys_apart(keys: Any) -> None:
    assert keys.claim("tools", "k", "sha-a", 60, now=T0).state == "new"
    assert keys.claim("outbox", "k", "sha-b", 60, now=T0).state == "new"
    assert keys.claim("a:b", "c", "sha-a", 60, now=T0).state == "new"  # a scope holding ':' is not
    assert keys.claim("a", "b:c", "sha-b", 60, now=T0).state == "new"  # another scope's key


def test_of_racing_claimers_exactly_one_gets_the_key(open_store: Callable[[], Any]) -> None:
    stores = [open_store() for _ in range(8)]  # each its own connection, as separate processes have
    for round_ in range(5):
        states: list[str] = []
        start = threading.Barrier(len(stores))

        def claim(
            store: Any, i: int, round_: int = round_, states: list[str] = states, start: threading.Barrier = start
        ) -> None:
            start.wait()
            sha = "same" if i % 2 == 0 else f"other-{i}"
            states.append(store.claim("tools", f"race-{round_}", sha, 60, now=T0).state)

        threads = [threading.Thread(target=claim, args=(s, i)) for i, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert len(states) == 8 and states.count("new") == 1, states
        assert set(states) <= {"new", "in_progress", "mismatch"}


def test_a_key_stored_before_claims_existed_counts_as_completed_and_stays(tmp_path: Path) -> None:
    from airlock.store.embedded.limits import SQLiteLimits
    from airlock.store.embedded.state import SQLiteState

    state = SQLiteState(tmp_path / "state.sqlite3")
    state.conn.execute("DELETE FROM schema_migrations WHERE concern = 'idempotency' AND version = 2")
    state.conn.execute("DROP INDEX idempotency_keys_expiry")
    state.conn.execute("ALTER TABLE idempotency_keys DROP COLUMN expires_at")
    state.conn.execute("ALTER TABLE idempotency_keys DROP COLUMN state")
    state.conn.execute(
        "INSERT INTO idempotency_keys(scope, key, request_sha, response) VALUES ('s', 'k', 'a', x'6f6b')"
    )
    state.close()
    keys = SQLiteLimits(tmp_path / "state.sqlite3")  # applies idempotency/0002 to the old table
    try:
        old = keys.claim("s", "k", "a", 1, now=T0 + 10 * 365 * 86400)
        assert old.state == "completed" and old.response == b"ok"
    finally:
        keys.close()
    assert sqlite3.connect(tmp_path / "state.sqlite3").execute(
        "SELECT version FROM schema_migrations WHERE concern = 'idempotency' ORDER BY version"
    ).fetchall() == [(1,), (2,)]
