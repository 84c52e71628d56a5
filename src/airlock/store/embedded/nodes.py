"""The writer registry in the embedded state database."""

from __future__ import annotations

from pathlib import Path

from airlock.store.embedded.failures import store_errors
from airlock.store.embedded.state import SQLiteState


class SQLiteWriterRegistry:
    def __init__(self, state_db: Path) -> None:
        self.state_db = state_db

    def register_writer(self, writer_id: str, node: str, region: str, pid: int) -> None:
        with store_errors(f"the state database {self.state_db} is not usable"):
            state = SQLiteState(self.state_db)
            try:
                state.conn.execute(
                    "INSERT INTO writers(writer_id, node, region, pid) VALUES (?, ?, ?, ?)",
                    (writer_id, node, region, pid),
                )
            finally:
                state.close()
