"""The limits guard: each rule of `limits:` that applies to a call takes one request from the bucket of
the call's partition (the rule's name and the values of its `per` fields: tenant, user, agent, session,
model). The buckets are GCRA in the shared store (airlock.store.limits), so every worker and every
replica draws from one budget. Over a limit, the call is refused with 429, Retry-After and the
RateLimit headers; the verdict, recorded on the span, names the rule, the partition and the wait.

A store that cannot be reached is answered by the configured fail policy (store.redis.on_unavailable),
and the verdict says that the policy, not the store, decided."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from airlock.config.schema import LimitRule
from airlock.errors import RateLimited
from airlock.guards import GuardedCall, Verdict
from airlock.limits.headers import policy_header, state_header
from airlock.store.limits import BucketAnswer, RateBuckets

_HEADER_FIELDS = {"user": "x-airlock-user", "agent": "x-airlock-agent", "session": "x-airlock-session"}


def partition_of(rule: LimitRule, call: GuardedCall) -> str:
    """The bucket's key: the rule's name and, per field, the call's value ("-" when it has none)."""
    parts = [rule.name]
    for field in rule.per:
        if field == "tenant":
            value = call.tenant
        elif field == "model":
            value = str(call.body.get("model") or "")
        else:
            value = call.headers.get(_HEADER_FIELDS[field])
        parts.append(f"{field}={value or '-'}")
    return "|".join(parts)


class LimitGuard:
    name = "limits"

    def __init__(self, rules: list[LimitRule], buckets: RateBuckets) -> None:
        self.rules = list(rules)
        self.buckets = buckets
        self._none_apply = Verdict(self.name, "allow", "no limit applies to this call", "limits", "unlimited")

    def _applies(self, rule: LimitRule, call: GuardedCall) -> bool:
        return not rule.models or str(call.body.get("model") or "") in rule.models

    async def check(self, call: GuardedCall) -> Verdict:
        rules = [r for r in self.rules if self._applies(r, call)]
        if not rules:
            return self._none_apply
        taken: list[dict[str, Any]] = []
        for i, rule in enumerate(rules):
            partition = partition_of(rule, call)
            answer = await asyncio.to_thread(self.buckets.take, partition, rule.rate_per_s, rule.burst_or_quota, 1)
            taken.append(_fact(rule, partition, answer))
            if not answer.allowed:
                await asyncio.to_thread(self._give_back, rules[:i], taken[:i])
                raise _refusal(rule, partition, answer, taken)
        decided_by = {f["decided_by"] for f in taken} - {"store"}
        reason = "within every limit" + (
            f" ({', '.join(sorted(decided_by))}: the store was unreachable)" if decided_by else ""
        )
        return Verdict(self.name, "allow", reason, "limits", "within", {"limits": taken})

    def _give_back(self, rules: list[LimitRule], taken: list[dict[str, Any]]) -> None:
        """A call refused by a later rule was not served: the requests the earlier rules took go back."""
        for rule, fact in zip(rules, taken, strict=True):
            if fact["decided_by"] == "store":
                self.buckets.correct(fact["partition"], rule.rate_per_s, rule.burst_or_quota, -1)


def _fact(rule: LimitRule, partition: str, answer: BucketAnswer) -> dict[str, Any]:
    return {
        "limit": rule.name,
        "partition": partition,
        "quota": rule.requests,
        "window_s": rule.window_s,
        "remaining": answer.remaining,
        "retry_after_s": round(answer.retry_after_s, 3),
        "decided_by": answer.decided_by,
    }


def _refusal(rule: LimitRule, partition: str, answer: BucketAnswer, taken: list[dict[str, Any]]) -> RateLimited:
    wait = max(1, math.ceil(answer.retry_after_s))
    if answer.decided_by == "fail-closed":
        detail = f"limit {rule.name!r} cannot be checked (its store is unreachable) and fails closed"
    else:
        detail = f"over limit {rule.name!r}: {rule.requests} requests per {rule.window_s:g}s for {partition}"
    detail += f"; retry in {wait}s"
    headers = {
        "Retry-After": str(wait),
        "RateLimit-Policy": policy_header(rule.name, rule.requests, rule.window_s, partition),
        "RateLimit": state_header(rule.name, answer.remaining, max(answer.reset_s, answer.retry_after_s), partition),
    }
    return RateLimited(
        detail, limit=rule.name, retry_after_s=wait, decided_by=answer.decided_by, limits=taken, _headers=headers
    )
