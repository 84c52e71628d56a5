"""Reading span rows from the record into SpanFacts: the key, the attribute signature, the cost from
the configured prices, and whether a policy denied or an evaluation failed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from typing import Any

import orjson

from airlock.config.schema import Config
from airlock.ledger import call_cost, find_model, price_in_effect
from airlock.sampling.facts import SpanFacts

_BASE_COLUMNS = (
    "trace_id",
    "parent_span_id",
    "start_ns",
    "end_ns",
    "status",
    "airlock.decisions",
    "attributes",
    "gen_ai.request.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "airlock.usage.reasoning_tokens",
    "airlock.upstream",
    "airlock.upstream.model",
    "airlock.replay.run",
)
_SIGNATURE_MAX = 512


class FactReader:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.cfg = config.sampling
        self._prices: dict[tuple[Any, Any, date], Any] = {}
        self._rare_attrs = set(self.cfg.rare.attributes) if self.cfg.rare.attributes is not None else None
        self._eval_kinds = set(self.cfg.failed_eval.decision_kinds)
        self._eval_verdicts = set(self.cfg.failed_eval.verdicts)

    @property
    def columns(self) -> list[str]:
        """The span columns facts are made from (a key column a segment lacks is read from attributes)."""
        return list(dict.fromkeys((*_BASE_COLUMNS, *self.cfg.key)))

    def read(self, rows: Iterable[dict[str, Any]]) -> Iterator[SpanFacts]:
        """The facts of each span row that has a trace id."""
        for row in rows:
            if row.get("trace_id"):
                yield self.facts(row)

    def facts(self, row: dict[str, Any]) -> SpanFacts:
        attrs = dict(row.get("attributes") or ())
        start = row.get("start_ns") or 0
        end = row.get("end_ns") or start
        key = "|".join(str(row.get(k) if k in row else attrs.get(k)) for k in self.cfg.key)
        sig_attrs = sorted((k, v) for k, v in attrs.items() if self._rare_attrs is None or k in self._rare_attrs)
        signature = (key + "|" + "|".join(f"{k}={v}" for k, v in sig_attrs))[:_SIGNATURE_MAX]
        denied, eval_failed = self._decisions(row.get("airlock.decisions"))
        eval_attr = self.cfg.failed_eval.attribute
        if eval_attr and attrs.get(eval_attr) in self._eval_verdicts:
            eval_failed = True
        input_tokens = row.get("gen_ai.usage.input_tokens") or 0
        output_tokens = row.get("gen_ai.usage.output_tokens") or 0
        return SpanFacts(
            trace_id=row["trace_id"],
            is_root=row.get("parent_span_id") is None,
            start_ns=start,
            end_ns=end,
            status=row.get("status") or "ok",
            key=key,
            signature=signature,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=self._cost(row, start) or 0.0,
            denied=denied,
            eval_failed=eval_failed,
            pinned="replay" if row.get("airlock.replay.run") else "",
        )

    def _decisions(self, raw: str | None) -> tuple[bool, bool]:
        if not raw or ("deny" not in raw and "fail" not in raw):
            return False, False
        try:
            items = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return False, False
        denied = failed = False
        for d in items if isinstance(items, list) else ():
            if not isinstance(d, dict):
                continue
            verdict = str(d.get("verdict", "")).lower()
            denied = denied or verdict in ("deny", "denied")
            failed = failed or (d.get("kind") in self._eval_kinds and verdict in self._eval_verdicts)
        return denied, failed

    def _cost(self, row: dict[str, Any], start_ns: int) -> float | None:
        upstream = row.get("airlock.upstream")
        if upstream is None:
            return None
        model = row.get("airlock.upstream.model") or row.get("gen_ai.request.model")
        day = datetime.fromtimestamp(start_ns / 1e9, tz=UTC).date()
        cache_key = (upstream, model, day)
        if cache_key not in self._prices:
            self._prices[cache_key] = price_in_effect(find_model(self.config, upstream, model), day)
        return call_cost(
            self._prices[cache_key],
            row.get("gen_ai.usage.input_tokens"),
            row.get("gen_ai.usage.output_tokens"),
            row.get("gen_ai.usage.cache_read.input_tokens"),
            row.get("airlock.usage.reasoning_tokens"),
        )
