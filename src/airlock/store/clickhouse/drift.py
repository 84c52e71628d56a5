"""DriftReader on ClickHouse: per successful call, the provider's token count against the local one
(store/drift.py), with the embedded reader's keys and order."""

from __future__ import annotations

from collections.abc import Sequence

from airlock.store.clickhouse.schema import SPANS
from airlock.store.clickhouse.transport import ClickHouseTransport
from airlock.store.drift import DRIFT_DIMENSIONS, TOKEN_SIDES, TokenRatio

# The drift dimensions as expressions over a span (as store/embedded/query.py's DRIFT_KEYS).
DRIFT_KEYS = {
    "model": "coalesce(`airlock.upstream.model`, `gen_ai.response.model`, `gen_ai.request.model`)",
    "script": "coalesce(`airlock.script`, 'none')",
    "upstream": "`airlock.upstream`",
    "tokenizer": "`airlock.local.tokenizer`",
    "tenant": "`airlock.tenant`",
}
assert set(DRIFT_KEYS) == set(DRIFT_DIMENSIONS)


class ClickHouseDriftReader:
    def __init__(self, transport: ClickHouseTransport) -> None:
        self.transport = transport

    def token_ratios(self, by: Sequence[str], since_ns: int | None, side: str) -> list[TokenRatio]:
        """One entry per ok call with a provider count and a positive local count of `side` tokens,
        started at or after since_ns, in start order (ties by span id). ValueError for an unknown
        dimension or side; StoreError when the store fails."""
        unknown = [d for d in by if d not in DRIFT_KEYS]
        if unknown or side not in TOKEN_SIDES:
            raise ValueError(f"no drift by {unknown} of {side} tokens")
        provider = f"`gen_ai.usage.{side}_tokens`"
        local = f"`airlock.local.{side}_tokens`"
        keys = "".join(f"{DRIFT_KEYS[d]} AS k{i}, " for i, d in enumerate(by))
        where = f"{provider} IS NOT NULL AND {local} > 0 AND status = 'ok'"
        params = {}
        if since_ns is not None:
            where += " AND start_ns >= {since:Int64}"
            params["since"] = since_ns
        rows = self.transport.query_rows(
            f"SELECT {keys}start_ns, toFloat64({provider}) / {local} - 1 AS ratio FROM {SPANS} WHERE {where}"
            " ORDER BY start_ns, span_id",
            params,
        )
        width = range(len(by))
        return [TokenRatio(tuple(str(r[f"k{i}"]) for i in width), int(r["start_ns"]), float(r["ratio"])) for r in rows]
