"""ReplayRunRepository on PostgreSQL (tables replay_runs and replay_items), behaving as the embedded
SQLiteReplayRuns. The claim is a conditional UPDATE: two runners claiming at once are ordered by the
run's row lock, and the second finds the holder changed and takes nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from airlock.errors import StoreConflict
from airlock.store.postgres.connection import PostgresPool
from airlock.store.replay import NewReplayRun, ReplayItem, ReplayRun, RunCounts


def _utc(when: datetime | None) -> datetime | None:
    return when.astimezone(UTC) if when is not None else None


class PostgresReplayRuns:
    """Replay runs and their items. Safe to call from several threads at once (each call borrows its own
    connection from the pool)."""

    def __init__(self, dsn: str) -> None:
        self.pool = PostgresPool(dsn)

    def create(self, run: NewReplayRun) -> None:
        with self.pool.transaction(f"creating replay {run.name!r}") as conn:
            cur = conn.execute(
                "INSERT INTO replay_runs(name, target, selection, options) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (name) DO NOTHING",
                (run.name, run.target, orjson.dumps(run.selection).decode(), orjson.dumps(run.options).decode()),
            )
            if cur.rowcount != 1:
                raise StoreConflict(f"a replay named {run.name!r} already exists")
            with conn.cursor() as items:
                items.executemany(
                    "INSERT INTO replay_items(run, trace_id, status) VALUES (%s, %s, 'pending')",
                    [(run.name, t) for t in run.trace_ids],
                )

    def claim(self, name: str, owner: str, replacing: str | None) -> bool:
        with self.pool.connection(f"claiming replay {name!r}") as conn:
            cur = conn.execute(
                "UPDATE replay_runs SET claimed_by = %s, claimed_at = now()"
                " WHERE name = %s AND claimed_by IS NOT DISTINCT FROM %s",
                (owner, name, replacing),
            )
            return cur.rowcount == 1

    def load(self, name: str) -> ReplayRun | None:
        with self.pool.connection(f"reading replay {name!r}") as conn:
            row = conn.execute(
                "SELECT name, target, selection, options, created_at, finished_at, claimed_by, claimed_at"
                " FROM replay_runs WHERE name = %s",
                (name,),
            ).fetchone()
        if row is None:
            return None
        return ReplayRun(
            name=row[0],
            target=row[1],
            selection=orjson.loads(row[2]),
            options=orjson.loads(row[3]),
            created_at=row[4].astimezone(UTC),
            finished_at=_utc(row[5]),
            claimed_by=row[6],
            claimed_at=_utc(row[7]),
        )

    def items(self, name: str) -> list[ReplayItem]:
        with self.pool.connection(f"reading the items of replay {name!r}") as conn:
            rows = conn.execute(
                "SELECT trace_id, status, result FROM replay_items WHERE run = %s ORDER BY trace_id", (name,)
            ).fetchall()
        return [ReplayItem(t, s, orjson.loads(r) if r else {}) for t, s, r in rows]

    def unfinished(self, name: str) -> list[str]:
        with self.pool.connection(f"reading the items of replay {name!r}") as conn:
            rows = conn.execute(
                "SELECT trace_id FROM replay_items WHERE run = %s AND status IN ('pending', 'failed')"
                " ORDER BY trace_id",
                (name,),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def counts(self, name: str) -> RunCounts:
        with self.pool.connection(f"counting the items of replay {name!r}") as conn:
            rows = conn.execute(
                "SELECT status, count(*),"
                " count(*) FILTER (WHERE status = 'done' AND (result::jsonb ->> 'diverged_at') IS NOT NULL)"
                " FROM replay_items WHERE run = %s GROUP BY status",
                (name,),
            ).fetchall()
        by_status = {str(status): int(n) for status, n, _ in rows}
        return RunCounts(
            done=by_status.get("done", 0),
            diverged=sum(int(d) for _, _, d in rows),
            failed=by_status.get("failed", 0),
            skipped=by_status.get("skipped", 0),
            pending=by_status.get("pending", 0),
        )

    def save_item(self, name: str, owner: str, trace_id: str, status: str, result: dict[str, Any]) -> None:
        with self.pool.transaction(f"saving trace {trace_id} of replay {name!r}") as conn:
            held = conn.execute(
                "UPDATE replay_runs SET claimed_at = now() WHERE name = %s AND claimed_by = %s", (name, owner)
            ).rowcount
            if not held:
                raise StoreConflict(f"replay {name!r} is no longer held by this runner")
            conn.execute(
                "UPDATE replay_items SET status = %s, result = %s, updated_at = now() WHERE run = %s AND trace_id = %s",
                (status, orjson.dumps(result).decode(), name, trace_id),
            )

    def finish(self, name: str, owner: str) -> None:
        with self.pool.connection(f"finishing replay {name!r}") as conn:
            conn.execute(
                "UPDATE replay_runs SET finished_at = now(), claimed_by = NULL, claimed_at = NULL"
                " WHERE name = %s AND claimed_by = %s",
                (name, owner),
            )

    def release(self, name: str, owner: str) -> None:
        with self.pool.connection(f"releasing replay {name!r}") as conn:
            conn.execute(
                "UPDATE replay_runs SET claimed_by = NULL, claimed_at = NULL WHERE name = %s AND claimed_by = %s",
                (name, owner),
            )

    def close(self) -> None:
        self.pool.close()
