"""LedgerItemRepository on PostgreSQL (table ledger_items), behaving as the embedded SQLiteLedgerItems."""

from __future__ import annotations

from collections.abc import Sequence

from airlock.errors import ItemConflict
from airlock.store.ledger import ITEM_COLUMNS, LedgerItemRecord, item_of_row, item_row
from airlock.store.postgres.connection import PostgresPool

_INSERT = (
    f"INSERT INTO ledger_items ({', '.join(ITEM_COLUMNS)}) VALUES ({', '.join(['%s'] * len(ITEM_COLUMNS))})"
    " ON CONFLICT (tenant, item_id) DO NOTHING"
)


class PostgresLedgerItems:
    """The posted line items. A batch is one transaction; two workers posting the same id at once are
    ordered by the primary key (the second waits for the first to commit, then finds its row)."""

    def __init__(self, dsn: str) -> None:
        self.pool = PostgresPool(dsn)

    def insert_all(self, items: Sequence[LedgerItemRecord]) -> list[bool]:
        if not items:
            return []
        # Rows are written in key order, so that two batches sharing ids wait on each other instead of
        # deadlocking; the answer keeps the caller's order (a stable sort keeps repeats of one id in it).
        # The inserts go as one pipeline, and the bodies already stored are read in one query after.
        order = sorted(range(len(items)), key=lambda i: (items[i].tenant, items[i].item_id))
        created = [False] * len(items)
        with self.pool.transaction("storing ledger items") as conn:
            with conn.cursor() as cur:
                cur.executemany(_INSERT + " RETURNING 1", [item_row(items[i]) for i in order], returning=True)
                for i in order:
                    created[i] = cur.fetchone() is not None
                    cur.nextset()
            known = [items[i] for i in range(len(items)) if not created[i]]
            if not known:
                return created
            stored = {
                (str(t), str(k)): str(sha)
                for t, k, sha in conn.execute(
                    "SELECT tenant, item_id, request_sha FROM ledger_items"
                    " WHERE (tenant, item_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
                    ([i.tenant for i in known], [i.item_id for i in known]),
                ).fetchall()
            }
            for item in known:  # the first in the caller's order, as the embedded store names it
                if stored.get((item.tenant, item.item_id)) != item.request_sha:
                    raise ItemConflict(item.item_id)
        return created

    def in_window(self, since_ns: int, until_ns: int) -> list[LedgerItemRecord]:
        with self.pool.connection("reading ledger items") as conn:
            rows = conn.execute(
                f"SELECT {', '.join(ITEM_COLUMNS)} FROM ledger_items WHERE occurred_ns >= %s AND occurred_ns < %s"
                " ORDER BY occurred_ns, seq",
                (since_ns, until_ns),
            ).fetchall()
        return [item_of_row(r) for r in rows]

    def close(self) -> None:
        self.pool.close()
