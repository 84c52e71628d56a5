"""GPU energy counter readings in the data directory's SQLite state: (device, time, cumulative mJ)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from airlock.errors import ReadingConflict
from airlock.store.embedded import SQLiteState


@dataclass(frozen=True, slots=True)
class Reading:
    device: str
    t_ns: int
    energy_mj: int  # the counter's value: millijoules since it last started (e.g. the driver loaded)


class ReadingIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = Field(min_length=1, max_length=128)
    t_ns: int = Field(gt=0, lt=2**62)
    energy_mj: int = Field(ge=0, lt=2**62)


class ReadingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    readings: list[ReadingIn] = Field(min_length=1, max_length=10_000)


class EnergyReadings:
    def __init__(self, state_db: Path) -> None:
        self.state = SQLiteState(state_db)
        self.conn: sqlite3.Connection = self.state.conn

    def add(self, readings: list[Reading], source: str) -> int:
        """Store readings all or nothing; a repeated reading is ignored, a different value for the same
        device and time raises ReadingConflict. Returns how many were new."""
        new = 0
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for r in readings:
                cur = self.conn.execute(
                    "INSERT INTO energy_readings (device, t_ns, energy_mj, source) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (device, t_ns) DO NOTHING",
                    (r.device, r.t_ns, r.energy_mj, source),
                )
                if cur.rowcount == 1:
                    new += 1
                    continue
                known = self.conn.execute(
                    "SELECT energy_mj FROM energy_readings WHERE device = ? AND t_ns = ?", (r.device, r.t_ns)
                ).fetchone()
                if known is None or known[0] != r.energy_mj:
                    raise ReadingConflict(r)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return new

    def of(self, device: str, since_ns: int = 0, until_ns: int = 2**62) -> list[Reading]:
        rows = self.conn.execute(
            "SELECT device, t_ns, energy_mj FROM energy_readings WHERE device = ? AND t_ns >= ? AND t_ns <= ?"
            " ORDER BY t_ns",
            (device, since_ns, until_ns),
        ).fetchall()
        return [Reading(*r) for r in rows]

    def devices(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT DISTINCT device FROM energy_readings ORDER BY 1")]

    def close(self) -> None:
        self.state.close()
