"""WriterRegistry on PostgreSQL (table writers), behaving as the embedded SQLiteWriterRegistry: a writer
id registered twice is a StoreConflict."""

from __future__ import annotations

from airlock.store.postgres.connection import PostgresPool


class PostgresWriterRegistry:
    def __init__(self, dsn: str) -> None:
        self.pool = PostgresPool(dsn, max_idle=1)  # a writer starts now and then: one connection is plenty

    def register_writer(self, writer_id: str, node: str, region: str, pid: int) -> None:
        with self.pool.connection(f"registering writer {writer_id}") as conn:
            conn.execute(
                "INSERT INTO writers(writer_id, node, region, pid) VALUES (%s, %s, %s, %s)",
                (writer_id, node, region, pid),
            )

    def close(self) -> None:
        self.pool.close()
