"""The demo report's reads on ClickHouse (DemoRecord): the calls by the region that answered, the hops'
outcomes and a span count, beside the traces (ClickHouseSpanReader) and token drift
(ClickHouseDriftReader) of the core readers."""

from __future__ import annotations

from airlock.store.clickhouse.drift import ClickHouseDriftReader
from airlock.store.clickhouse.spans import ClickHouseSpanReader
from airlock.store.clickhouse.transport import ClickHouseTransport
from airlock.store.demo import HopOutcome, RegionCalls

# quantileExactInclusive interpolates between the two nearest values, as DuckDB's quantile_cont does.
_BY_REGION = """
    SELECT coalesce(`airlock.upstream.region`, '(none: rejected or exhausted)') AS region,
           count() AS calls,
           countIf(status = 'ok') AS ok,
           countIf(status = 'error') AS errors,
           countIf(status = 'cancelled') AS cancelled,
           countIf(`airlock.attempts` > 1) AS failed_over,
           sum(coalesce(`gen_ai.usage.input_tokens`, 0)) AS tokens_in,
           sum(coalesce(`gen_ai.usage.output_tokens`, 0)) AS tokens_out,
           sum(coalesce(`gen_ai.usage.cache_read.input_tokens`, 0)) AS cached,
           quantileExactInclusive(0.5)(duration_ms) AS p50_ms,
           quantileExactInclusive(0.95)(duration_ms) AS p95_ms
    FROM spans WHERE `airlock.source` IS NULL GROUP BY region ORDER BY calls DESC, region"""


class ClickHouseDemoReads:
    """The demo report's own reads over the spans and hops tables."""

    def __init__(self, transport: ClickHouseTransport) -> None:
        self.transport = transport

    def spans_recorded(self) -> int:
        return int(self.transport.query_rows("SELECT count() AS n FROM spans")[0]["n"])

    def calls_by_region(self) -> list[RegionCalls]:
        return [
            RegionCalls(
                region=str(r["region"]),
                calls=int(r["calls"]),
                ok=int(r["ok"]),
                errors=int(r["errors"]),
                cancelled=int(r["cancelled"]),
                failed_over=int(r["failed_over"]),
                tokens_in=int(r["tokens_in"]),
                tokens_out=int(r["tokens_out"]),
                cached=int(r["cached"]),
                p50_ms=r["p50_ms"],
                p95_ms=r["p95_ms"],
            )
            for r in self.transport.query_rows(_BY_REGION)
        ]

    def hop_outcomes(self) -> list[HopOutcome]:
        rows = self.transport.query_rows(
            "SELECT upstream, outcome, count() AS n FROM hops GROUP BY upstream, outcome ORDER BY upstream, outcome"
        )
        return [HopOutcome(r["upstream"], r["outcome"], int(r["n"])) for r in rows]

    def first_failed_received_trace(self) -> str | None:
        rows = self.transport.query_rows(
            "SELECT trace_id FROM spans WHERE `airlock.source` = 'otlp' AND status = 'error'"
            " ORDER BY start_ns, span_id LIMIT 1"
        )
        return str(rows[0]["trace_id"]) if rows else None

    def upstream_request_digest(self, trace_id: str) -> str | None:
        rows = self.transport.query_rows(
            "SELECT `airlock.payload.upstream_request` AS h FROM spans WHERE trace_id = {trace:String}"
            " AND `airlock.payload.upstream_request` IS NOT NULL ORDER BY start_ns, span_id LIMIT 1",
            {"trace": trace_id},
        )
        return str(rows[0]["h"]) if rows else None


class ClickHouseDemoRecord(ClickHouseDemoReads, ClickHouseSpanReader, ClickHouseDriftReader):
    """DemoRecord on ClickHouse: the demo's own reads, the core span reader's and token drift."""

    def __init__(self, transport: ClickHouseTransport) -> None:
        ClickHouseDemoReads.__init__(self, transport)
        ClickHouseSpanReader.__init__(self, transport)
        ClickHouseDriftReader.__init__(self, transport)
