"""The energy report's storage in the embedded store: counter readings in SQLite, the calls' facts read
by DuckDB over the segments, and the roll-up by DuckDB over the per-call table in memory."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from airlock.errors import ReadingConflict, StoreUnavailable
from airlock.store.embedded.failures import sqlite_failure
from airlock.store.embedded.layout import DataDir
from airlock.store.embedded.ledger import SPAN_MODEL_JOINS, with_compaction_retry
from airlock.store.embedded.query import DuckDBSpanReader
from airlock.store.embedded.sampling import create_trace_weights_view
from airlock.store.embedded.state import SQLiteState
from airlock.store.energy import ENERGY_DIMENSIONS, EnergyRollup, Reading
from airlock.store.ledger import PricingTables


class SQLiteEnergyReadings:
    """EnergyReadingRepository on the data directory's SQLite state (table energy_readings)."""

    def __init__(self, state_db: Path) -> None:
        try:
            self.state = SQLiteState(state_db)
        except sqlite3.Error as e:
            raise sqlite_failure(e, f"opening {state_db}") from e
        self.conn = self.state.conn

    def add(self, readings: Sequence[Reading], source: str) -> int:
        new = 0
        try:
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
        except sqlite3.Error as e:
            raise sqlite_failure(e, "storing energy readings") from e
        return new

    def of(self, device: str, since_ns: int = 0, until_ns: int = 2**62) -> list[Reading]:
        try:
            rows = self.conn.execute(
                "SELECT device, t_ns, energy_mj FROM energy_readings WHERE device = ? AND t_ns >= ? AND t_ns <= ?"
                " ORDER BY t_ns",
                (device, since_ns, until_ns),
            ).fetchall()
        except sqlite3.Error as e:
            raise sqlite_failure(e, "reading energy readings") from e
        return [Reading(*r) for r in rows]

    def devices(self) -> list[str]:
        try:
            return [r[0] for r in self.conn.execute("SELECT DISTINCT device FROM energy_readings ORDER BY 1")]
        except sqlite3.Error as e:
            raise sqlite_failure(e, "reading energy devices") from e

    def close(self) -> None:
        self.state.close()


_FACTS = (
    """
SELECT s.span_id, s.trace_id, coalesce(s."airlock.task", s.trace_id) AS task, s."airlock.tenant" AS tenant,
       s.attributes['feature'] AS feature, coalesce(s.attributes['task_type'], s.attributes['feature']) AS task_type,
       s."airlock.upstream" AS upstream, coalesce(rt.model, mn.name, mk.model) AS model, s.start_ns,
       greatest(coalesce(s.end_ns, s.start_ns), s.start_ns) AS end_ns, s.ttft_ms,
       coalesce(s."gen_ai.usage.input_tokens", s."airlock.local.input_tokens", 0) AS in_tok,
       coalesce(s."gen_ai.usage.cache_read.input_tokens", 0) AS cached,
       coalesce(s."gen_ai.usage.output_tokens", s."airlock.local.output_tokens", 0) AS out_tok,
       coalesce(tw.weight, s."airlock.sample.rate", 1.0) AS weight  -- traces it stands for (tail sampling)
FROM spans s
LEFT JOIN trace_weights tw ON tw.trace_id = s.trace_id"""
    + SPAN_MODEL_JOINS
    + """WHERE s."airlock.upstream" IS NOT NULL AND s.kind LIKE 'model.%' AND s."airlock.replay.run" IS NULL
  AND s.start_ns >= ? AND s.start_ns < ?
ORDER BY s.start_ns
"""
)


class DuckDBCallFacts:
    """CallFactReader over a data directory's segments."""

    def __init__(self, data: DataDir) -> None:
        self.data = data

    def call_facts(self, since_ns: int, until_ns: int, pricing: PricingTables) -> pa.Table:
        return with_compaction_retry(lambda: self._read(since_ns, until_ns, pricing), "reading the calls' facts")

    def _read(self, since_ns: int, until_ns: int, pricing: PricingTables) -> pa.Table:
        con = DuckDBSpanReader(self.data).connect()
        try:
            for name, config_table in (
                ("model_keys", pricing.model_keys),
                ("route_targets", pricing.route_targets),
                ("model_names", pricing.model_names),
            ):
                con.register(name, config_table)
            create_trace_weights_view(con, self.data)
            rel = con.sql(_FACTS, params=[since_ns, until_ns])
            # duckdb 2 names it to_arrow_table; 1.x arrow
            table: pa.Table = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()
            return table
        finally:
            con.close()


_DIMENSION_SQL = {
    "model_tier": "tier",
    "batch_bucket": "batch_bucket",
    "cache": "cache",
    "tenant": "coalesce(tenant, '(none)')",
    "task_type": "coalesce(task_type, '(none)')",
    "feature": "coalesce(feature, '(none)')",
    "model": "coalesce(model, '(none)')",
    "upstream": "upstream",
    "task": "task",
    "source": "source",
}
assert set(_DIMENSION_SQL) == set(ENERGY_DIMENSIONS)


class DuckDBEnergyAggregator:
    """EnergyAggregator in an in-memory DuckDB connection."""

    def rollup(self, calls: pa.Table, by: Sequence[str], grid_gco2e_per_kwh: float) -> EnergyRollup:
        unknown = [d for d in by if d not in _DIMENSION_SQL]
        if unknown:
            raise ValueError(f"cannot group by {unknown}; choose from {', '.join(ENERGY_DIMENSIONS)}")
        try:
            return self._rollup(calls, by, grid_gco2e_per_kwh)
        except duckdb.Error as e:
            raise StoreUnavailable(f"rolling up energy: {type(e).__name__}: {e}") from e

    def _rollup(self, calls: pa.Table, by: Sequence[str], grid: float) -> EnergyRollup:
        con = duckdb.connect(":memory:")
        try:
            con.register("raw_calls", calls)
            # With tail sampling a kept call counts as often as its trace stands for (a dropped one kept for
            # replay, not at all); measured joules are the GPU's whole reading already, so they are not scaled.
            con.execute(
                """CREATE TEMP VIEW calls AS SELECT * REPLACE (
                       in_tok * weight AS in_tok, out_tok * weight AS out_tok,
                       CASE WHEN source = 'measured' THEN joules ELSE joules * weight END AS joules)
                   FROM raw_calls"""
            )
            keys = ", ".join(f"{_DIMENSION_SQL[d]} AS {d}" for d in by)
            tasks = "sum(weight) FILTER (WHERE first_of_task)"  # the tasks in the group, each as often as it stands
            measures = f"""
                round(sum(weight))::BIGINT AS calls, round(sum(in_tok))::BIGINT AS input_tokens,
                round(sum(out_tok))::BIGINT AS output_tokens,
                sum(joules) AS joules, {tasks} AS tasks, avg(batch) AS mean_batch,
                count(*) FILTER (WHERE source = 'measured') AS measured_calls,
                count(*) FILTER (WHERE approximate) AS approximate_calls,
                sum(joules) / 3600.0 / nullif({tasks}, 0) AS wh_per_task,
                sum(joules) / 3.6e6 * {float(grid)!r} AS gco2e,
                (sum(in_tok) + sum(out_tok)) / nullif(sum(joules), 0) AS tokens_per_j,
                sum(joules) / nullif(sum(in_tok) + sum(out_tok), 0) AS j_per_token,
                sum(joules) / nullif(sum(out_tok), 0) AS j_per_output_token"""

            def run(query: str) -> list[dict[str, Any]]:
                cur = con.execute(query)
                cols = [d[0] for d in cur.description or []]
                return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

            def scan(partition: str) -> str:
                """The calls with energy, each marked when it is the first of its task in its group."""
                return (
                    f"(SELECT *, row_number() OVER (PARTITION BY {partition}task ORDER BY span_id) = 1"
                    " AS first_of_task FROM calls WHERE joules IS NOT NULL)"
                )

            group_exprs = "".join(f"{_DIMENSION_SQL[d]}, " for d in by)
            rows = (
                run(f"SELECT {keys}, {measures} FROM {scan(group_exprs)} GROUP BY ALL ORDER BY joules DESC")
                if by
                else []
            )
            total = run(f"SELECT {measures} FROM {scan('')}")[0]
            no_energy = run(
                "SELECT upstream, coalesce(model, '(unknown)') AS model, count(*) AS calls FROM calls"
                " WHERE joules IS NULL GROUP BY ALL ORDER BY calls DESC"
            )
        finally:
            con.close()
        return EnergyRollup(rows, total, no_energy)
