"""Where things live in the data directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataDir:
    root: Path

    @classmethod
    def at(cls, path: str | os.PathLike[str]) -> DataDir:
        return cls(Path(path))

    @property
    def spans(self) -> Path:
        return self.root / "segments" / "spans"

    @property
    def hops(self) -> Path:
        return self.root / "segments" / "hops"

    @property
    def blob_index(self) -> Path:
        return self.root / "segments" / "blobs"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def wal(self) -> Path:
        return self.root / "wal"

    @property
    def spill(self) -> Path:
        return self.root / "spill"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def state_db(self) -> Path:
        return self.root / "state.sqlite3"

    def create(self) -> None:
        for d in (self.spans, self.hops, self.blob_index, self.blobs, self.wal, self.spill, self.run):
            d.mkdir(parents=True, exist_ok=True)
