"""The embedded DemoRecord: the demo report's reads as DuckDB over the live segments."""

from __future__ import annotations

from airlock.store.demo import HopOutcome, RegionCalls
from airlock.store.embedded.failures import store_errors
from airlock.store.embedded.query import DuckDBSpanReader

_BY_REGION = """
    SELECT coalesce("airlock.upstream.region", '(none: rejected or exhausted)') AS region,
           count(*) AS calls,
           sum(CASE WHEN status = 'ok' THEN 1 ELSE 0 END) AS ok,
           sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS errors,
           sum(CASE WHEN status = 'cancelled' THEN 1 ELSE 0 END) AS cancelled,
           sum(CASE WHEN "airlock.attempts" > 1 THEN 1 ELSE 0 END) AS failed_over,
           sum(coalesce("gen_ai.usage.input_tokens", 0)) AS tokens_in,
           sum(coalesce("gen_ai.usage.output_tokens", 0)) AS tokens_out,
           sum(coalesce("gen_ai.usage.cache_read.input_tokens", 0)) AS cached,
           quantile_cont(duration_ms, 0.5) AS p50_ms,
           quantile_cont(duration_ms, 0.95) AS p95_ms
    FROM spans WHERE "airlock.source" IS NULL GROUP BY 1 ORDER BY calls DESC"""


class DuckDBDemoRecord(DuckDBSpanReader):
    def spans_recorded(self) -> int:
        with store_errors("demo record"):
            return int(self.sql("SELECT count(*) AS n FROM spans")[0]["n"])

    def calls_by_region(self) -> list[RegionCalls]:
        with store_errors("demo record"):
            return [RegionCalls(**row) for row in self.sql(_BY_REGION)]

    def hop_outcomes(self) -> list[HopOutcome]:
        with store_errors("demo record"):
            rows = self.sql("SELECT upstream, outcome, count(*) AS n FROM hops GROUP BY 1, 2 ORDER BY 1, 2")
        return [HopOutcome(r["upstream"], r["outcome"], int(r["n"])) for r in rows]

    def first_failed_received_trace(self) -> str | None:
        with store_errors("demo record"):
            rows = self.sql(
                "SELECT trace_id FROM spans WHERE \"airlock.source\" = 'otlp' AND status = 'error'"
                " ORDER BY start_ns LIMIT 1"
            )
        return str(rows[0]["trace_id"]) if rows else None

    def upstream_request_digest(self, trace_id: str) -> str | None:
        with store_errors("demo record"):
            rows = self.sql(
                'SELECT "airlock.payload.upstream_request" AS h FROM spans WHERE trace_id = ?'
                ' AND "airlock.payload.upstream_request" IS NOT NULL LIMIT 1',
                [trace_id],
            )
        return str(rows[0]["h"]) if rows else None
