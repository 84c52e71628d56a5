"""Control-plane repository: the gateway nodes and recorder writers that have run against a store."""

from __future__ import annotations

from typing import Protocol


class WriterRegistry(Protocol):
    def register_writer(self, writer_id: str, node: str, region: str, pid: int) -> None:
        """Note a recorder writer starting (its id names its segments)."""
        ...
