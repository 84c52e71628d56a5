"""The guard chain: verdicts in order, each kept as a decision, the first deny ends it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from airlock.errors import AirlockError, Forbidden
from airlock.guards import GuardChain, Verdict


@dataclass
class Call:
    kind: str = "chat"
    tenant: str | None = "acme"
    body: dict[str, Any] = field(default_factory=lambda: {"model": "m", "messages": []})
    raw: bytes = b"{}"
    route: Any = None

    def replace_body(self, body: dict[str, Any], raw: bytes) -> None:
        self.body, self.raw = body, raw


class Allow:
    name = "allow"

    async def check(self, call: Call) -> Verdict:
        return Verdict(self.name, "allow", "nothing to object", "test.allow")


class Shrink:
    name = "shrink"

    async def check(self, call: Call) -> Verdict:
        call.replace_body({**call.body, "messages": []}, b"{}")
        return Verdict(self.name, "modify", "dropped the turns", verdict="truncated", facts={"dropped": 2})


class DenyTenant:
    name = "tenant-block"

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant

    async def check(self, call: Call) -> Verdict:
        if call.tenant == self.tenant:
            return Verdict(
                self.name, "deny", f"tenant {self.tenant} is blocked", "test.block", error=Forbidden("blocked")
            )
        return Verdict(self.name, "allow", "tenant not blocked", "test.block")


class Raises:
    name = "raiser"

    def __init__(self) -> None:
        self.calls = 0

    async def check(self, call: Call) -> Verdict:
        self.calls += 1
        raise AirlockError("over the limit", limit=5, _private="never recorded")


def run(chain: GuardChain, call: Call) -> list[dict[str, Any]]:
    decisions: list[dict[str, Any]] = []
    asyncio.run(chain.run(call, decisions))
    return decisions


def test_every_verdict_is_recorded_in_order_with_reason_and_policy() -> None:
    call = Call(body={"model": "m", "messages": [{"role": "user", "content": "x"}] * 2})
    decisions = run(GuardChain([Allow(), Shrink(), DenyTenant("globex")]), call)
    assert [d["kind"] for d in decisions] == ["allow", "shrink", "tenant-block"]
    assert decisions[0] == {"kind": "allow", "verdict": "allow", "outcome": "allow", "reason": "nothing to object",
                            "policy": "test.allow"}  # fmt: skip
    assert (
        decisions[1]["verdict"] == "truncated" and decisions[1]["outcome"] == "modify" and decisions[1]["dropped"] == 2
    )
    assert call.body["messages"] == []  # the later guards saw the body the earlier one changed


def test_a_deny_stops_the_chain_and_raises_its_error_after_recording_it() -> None:
    later = Raises()
    chain = GuardChain([Allow(), DenyTenant("acme"), later])
    decisions: list[dict[str, Any]] = []
    with pytest.raises(Forbidden):
        asyncio.run(chain.run(Call(), decisions))
    assert [d["outcome"] for d in decisions] == ["allow", "deny"]
    assert decisions[1]["reason"] == "tenant acme is blocked"
    assert later.calls == 0


def test_a_guard_that_raises_is_recorded_as_a_deny_with_its_public_facts() -> None:
    decisions: list[dict[str, Any]] = []
    with pytest.raises(AirlockError, match="over the limit"):
        asyncio.run(GuardChain([Raises()]).run(Call(), decisions))
    (d,) = decisions
    assert d["kind"] == "raiser" and d["outcome"] == "deny" and d["verdict"] == "rejected"
    assert d["reason"] == "over the limit" and d["limit"] == 5 and "_private" not in d


def test_a_guard_that_fails_with_a_defect_is_not_turned_into_a_verdict() -> None:
    class Broken:
        name = "broken"

        async def check(self, call: Call) -> Verdict:
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):  # a defect reaches the error boundary as a 500, not a policy deny
        asyncio.run(GuardChain([Broken()]).run(Call(), []))
