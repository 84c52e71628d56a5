"""The embedded replay stores: the selection read with DuckDB over the Parquet segments, the runs kept
in the SQLite state database (tables replay_runs and replay_items). Library failures leave here as
errors.StoreError subclasses."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson

from airlock.errors import BlobCorrupt, StoreConflict, StoreUnavailable
from airlock.store.embedded.blobs import read_blob
from airlock.store.embedded.layout import DataDir
from airlock.store.embedded.query import BlobReader, DuckDBSpanReader
from airlock.store.embedded.state import SQLiteState
from airlock.store.interface import TraceFilter
from airlock.store.replay import (
    NewReplayRun,
    RecordedPair,
    ReplayItem,
    ReplayRun,
    RunCounts,
    TraceSelection,
)


@contextmanager
def _reading(what: str) -> Iterator[None]:
    try:
        yield
    except (duckdb.Error, OSError) as e:
        raise StoreUnavailable(f"reading {what}: {type(e).__name__}: {e}") from e


class LocatedPayloads:
    """Payloads whose pack locations were looked up once, read from their packs on demand."""

    def __init__(self, data: DataDir, locations: dict[str, tuple[Any, ...]]) -> None:
        self._data = data
        self._locations = locations

    def get_many(self, digests: Sequence[str]) -> dict[str, bytes | BlobCorrupt]:
        found: dict[str, bytes | BlobCorrupt] = {}
        for digest in digests:
            location = self._locations.get(digest)
            if location is None:
                continue
            try:
                found[digest] = read_blob(self._data.blobs, digest, location)
            except BlobCorrupt as e:
                found[digest] = e
            except OSError as e:
                raise StoreUnavailable(f"reading payload {digest[:12]}: {e}") from e
        return found


class DuckDBReplaySelection:
    """ReplaySelection over the data directory's live segments."""

    def __init__(self, data: DataDir) -> None:
        self.data = data
        self._reader = DuckDBSpanReader(data)

    def traces(self, flt: TraceFilter, limit: int | None) -> TraceSelection:
        where, params = self._reader._where(replace(flt, originals_only=True))
        cap = "" if limit is None else f"LIMIT {max(int(limit), 0)}"
        query = f"""
            WITH hit AS (SELECT DISTINCT trace_id FROM spans WHERE {where}),
                 started AS (SELECT s.trace_id, min(s.start_ns) AS start_ns
                             FROM spans s JOIN hit USING (trace_id) GROUP BY s.trace_id)
            SELECT trace_id, count(*) OVER () AS matched FROM started
            ORDER BY start_ns DESC, trace_id {cap}
        """
        if limit is not None and limit <= 0:  # LIMIT 0 returns no row to carry the count
            query = f"""
                WITH hit AS (SELECT DISTINCT trace_id FROM spans WHERE {where})
                SELECT NULL AS trace_id, count(*) AS matched FROM hit
            """
        with _reading("the trace selection"):
            rows = self._reader.sql(query, params)
        ids = [str(r["trace_id"]) for r in rows if r["trace_id"] is not None]
        matched = int(rows[0]["matched"]) if rows else 0
        return TraceSelection(ids, matched, limit)

    def model_calls(self, trace_ids: Sequence[str], kinds: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        calls: dict[str, list[dict[str, Any]]] = {t: [] for t in trace_ids}
        if not trace_ids or not kinds:
            return calls
        with _reading("the selected model calls"):
            rows = self._reader.sql(
                "SELECT * FROM spans WHERE trace_id IN (SELECT unnest(?)) AND kind IN (SELECT unnest(?))"
                " ORDER BY start_ns, span_id",
                [list(trace_ids), list(kinds)],
            )
        for row in rows:
            calls[row["trace_id"]].append(row)
        return calls

    def recorded_pairs(self, run: str) -> list[RecordedPair]:
        with _reading(f"the calls of replay {run!r}"):
            rows = self._reader.sql(
                "SELECT r.duration_ms AS replay_ms, o.duration_ms AS original_ms,"
                ' r."airlock.payload.upstream_request" AS r_req, o."airlock.payload.upstream_request" AS o_req'
                ' FROM spans r JOIN spans o ON r."airlock.replay.of" = o.span_id'
                ' WHERE r."airlock.replay.run" = ? AND o."airlock.replay.run" IS NULL AND r.kind = \'model.chat\''
                " AND coalesce(r.attributes['replay_role'], '') <> 'judge'",
                [run],
            )
        return [RecordedPair(r["replay_ms"], r["original_ms"], r["r_req"], r["o_req"]) for r in rows]

    def payloads(self, digests: Sequence[str]) -> LocatedPayloads:
        with _reading("the blob index"):
            locations = BlobReader(self.data).locate(list(dict.fromkeys(digests)))
        return LocatedPayloads(self.data, locations)


def _when(text: str | None) -> datetime | None:
    """SQLite's CURRENT_TIMESTAMP text (UTC) as an aware datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC) if text else None


class SQLiteReplayRuns:
    """ReplayRunRepository in the state database. One connection, shared by the threads a runner saves
    from, so every call holds a lock for the time of its statements."""

    def __init__(self, data: DataDir) -> None:
        self._lock = threading.Lock()
        try:
            self._state = SQLiteState(data.state_db)
        except (sqlite3.Error, OSError) as e:
            raise StoreUnavailable(f"opening the state database {data.state_db}: {e}") from e
        self._conn = self._state.conn

    @contextmanager
    def _locked(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as e:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise StoreUnavailable(f"{what}: sqlite3: {e}") from e

    def create(self, run: NewReplayRun) -> None:
        with self._locked(f"creating replay {run.name!r}") as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT INTO replay_runs(name, target, selection, options) VALUES (?, ?, ?, ?)",
                    (run.name, run.target, orjson.dumps(run.selection).decode(), orjson.dumps(run.options).decode()),
                )
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK")
                raise StoreConflict(f"a replay named {run.name!r} already exists") from None
            conn.executemany(
                "INSERT INTO replay_items(run, trace_id, status) VALUES (?, ?, 'pending')",
                [(run.name, t) for t in run.trace_ids],
            )
            conn.execute("COMMIT")

    def claim(self, name: str, owner: str, replacing: str | None) -> bool:
        with self._locked(f"claiming replay {name!r}") as conn:
            cur = conn.execute(
                "UPDATE replay_runs SET claimed_by = ?, claimed_at = CURRENT_TIMESTAMP"
                " WHERE name = ? AND claimed_by IS ?",
                (owner, name, replacing),
            )
            return cur.rowcount == 1

    def load(self, name: str) -> ReplayRun | None:
        with self._locked(f"reading replay {name!r}") as conn:
            row = conn.execute(
                "SELECT name, target, selection, options, created_at, finished_at, claimed_by, claimed_at"
                " FROM replay_runs WHERE name = ?",
                (name,),
            ).fetchone()
        if row is None:
            return None
        created = _when(row[4])
        return ReplayRun(
            name=row[0],
            target=row[1],
            selection=orjson.loads(row[2]),
            options=orjson.loads(row[3]),
            created_at=created if created else datetime.now(UTC),
            finished_at=_when(row[5]),
            claimed_by=row[6],
            claimed_at=_when(row[7]),
        )

    def items(self, name: str) -> list[ReplayItem]:
        with self._locked(f"reading the items of replay {name!r}") as conn:
            rows = conn.execute(
                "SELECT trace_id, status, result FROM replay_items WHERE run = ? ORDER BY trace_id", (name,)
            ).fetchall()
        return [ReplayItem(t, s, orjson.loads(r) if r else {}) for t, s, r in rows]

    def unfinished(self, name: str) -> list[str]:
        with self._locked(f"reading the items of replay {name!r}") as conn:
            rows = conn.execute(
                "SELECT trace_id FROM replay_items WHERE run = ? AND status IN ('pending', 'failed') ORDER BY trace_id",
                (name,),
            ).fetchall()
        return [r[0] for r in rows]

    def counts(self, name: str) -> RunCounts:
        with self._locked(f"counting the items of replay {name!r}") as conn:
            by_status = dict(
                conn.execute("SELECT status, count(*) FROM replay_items WHERE run = ? GROUP BY status", (name,))
            )
            diverged = conn.execute(
                "SELECT count(*) FROM replay_items WHERE run = ? AND status = 'done'"
                " AND json_extract(result, '$.diverged_at') IS NOT NULL",
                (name,),
            ).fetchone()[0]
        return RunCounts(
            done=by_status.get("done", 0),
            diverged=diverged,
            failed=by_status.get("failed", 0),
            skipped=by_status.get("skipped", 0),
            pending=by_status.get("pending", 0),
        )

    def save_item(self, name: str, owner: str, trace_id: str, status: str, result: dict[str, Any]) -> None:
        with self._locked(f"saving trace {trace_id} of replay {name!r}") as conn:
            conn.execute("BEGIN IMMEDIATE")
            held = conn.execute(
                "UPDATE replay_runs SET claimed_at = CURRENT_TIMESTAMP WHERE name = ? AND claimed_by = ?",
                (name, owner),
            ).rowcount
            if not held:
                conn.execute("ROLLBACK")
                raise StoreConflict(f"replay {name!r} is no longer held by this runner")
            conn.execute(
                "UPDATE replay_items SET status = ?, result = ?, updated_at = CURRENT_TIMESTAMP"
                " WHERE run = ? AND trace_id = ?",
                (status, orjson.dumps(result).decode(), name, trace_id),
            )
            conn.execute("COMMIT")

    def finish(self, name: str, owner: str) -> None:
        with self._locked(f"finishing replay {name!r}") as conn:
            conn.execute(
                "UPDATE replay_runs SET finished_at = CURRENT_TIMESTAMP, claimed_by = NULL, claimed_at = NULL"
                " WHERE name = ? AND claimed_by = ?",
                (name, owner),
            )

    def release(self, name: str, owner: str) -> None:
        with self._locked(f"releasing replay {name!r}") as conn:
            conn.execute(
                "UPDATE replay_runs SET claimed_by = NULL, claimed_at = NULL WHERE name = ? AND claimed_by = ?",
                (name, owner),
            )

    def close(self) -> None:
        with self._lock:
            self._state.close()
