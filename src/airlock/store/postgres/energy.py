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
        if not readings:
            return 0
        # One pipeline of inserts, then one query for the values stored at the times already taken.
        order = sorted(range(len(readings)), key=lambda i: (readings[i].device, readings[i].t_ns))
        inserted = [False] * len(readings)
        with self.pool.transaction("storing energy readings") as conn:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO energy_readings (device, t_ns, energy_mj, source) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (device, t_ns) DO NOTHING RETURNING 1",
                    [(readings[i].device, readings[i].t_ns, readings[i].energy_mj, source) for i in order],
                    returning=True,
                )
                for i in order:
                    inserted[i] = cur.fetchone() is not None
                    cur.nextset()
            repeats = [r for r, new in zip(readings, inserted, strict=True) if not new]
            if repeats:
                stored = {
                    (str(d), int(t)): int(e)
                    for d, t, e in conn.execute(
                        "SELECT device, t_ns, energy_mj FROM energy_readings"
                        " WHERE (device, t_ns) IN (SELECT * FROM unnest(%s::text[], %s::bigint[]))",
                        ([r.device for r in repeats], [r.t_ns for r in repeats]),
                    ).fetchall()
                }
                for r in repeats:  # the first in the caller's order, as the embedded store names it
                    if stored.get((r.device, r.t_ns)) != r.energy_mj:
                        raise ReadingConflict(r)
        return sum(inserted)

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
