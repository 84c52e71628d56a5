"""EnergyReadingRepository on PostgreSQL (table energy_readings), behaving as the embedded
SQLiteEnergyReadings."""

from __future__ import annotations

from collections.abc import Sequence

from airlock.errors import ReadingConflict
from airlock.store.energy import Reading
from airlock.store.postgres.connection import PostgresPool


class PostgresEnergyReadings:
    """GPU energy counter readings by (device, time). A batch is one transaction, written in key order so
    that two writers adding overlapping readings wait on each other instead of deadlocking."""

    def __init__(self, dsn: str) -> None:
        self.pool = PostgresPool(dsn)

    def add(self, readings: Sequence[Reading], source: str) -> int:
        new = 0
        conflicts: list[int] = []
        order = sorted(range(len(readings)), key=lambda i: (readings[i].device, readings[i].t_ns))
        with self.pool.transaction("storing energy readings") as conn:
            for i in order:
                r = readings[i]
                cur = conn.execute(
                    "INSERT INTO energy_readings (device, t_ns, energy_mj, source) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (device, t_ns) DO NOTHING",
                    (r.device, r.t_ns, r.energy_mj, source),
                )
                if cur.rowcount == 1:
                    new += 1
                    continue
                known = conn.execute(
                    "SELECT energy_mj FROM energy_readings WHERE device = %s AND t_ns = %s", (r.device, r.t_ns)
                ).fetchone()
                if known is None or known[0] != r.energy_mj:
                    conflicts.append(i)
            if conflicts:  # the first in the caller's order, as the embedded store names it
                raise ReadingConflict(readings[min(conflicts)])
        return new

    def of(self, device: str, since_ns: int = 0, until_ns: int = 2**62) -> list[Reading]:
        with self.pool.connection("reading energy readings") as conn:
            rows = conn.execute(
                "SELECT device, t_ns, energy_mj FROM energy_readings WHERE device = %s AND t_ns >= %s AND t_ns <= %s"
                " ORDER BY t_ns",
                (device, since_ns, until_ns),
            ).fetchall()
        return [Reading(str(d), int(t), int(e)) for d, t, e in rows]

    def devices(self) -> list[str]:
        with self.pool.connection("reading energy devices") as conn:
            rows = conn.execute("SELECT DISTINCT device FROM energy_readings ORDER BY 1").fetchall()
        return [str(r[0]) for r in rows]

    def close(self) -> None:
        self.pool.close()
