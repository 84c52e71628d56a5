"""The guard stage of a call: each guard checks the call in turn, and every verdict is kept for its span.

A guard is anything with a `name` and an async `check(call) -> Verdict`. It may change the call's body
(`call.replace_body`) and say so with outcome "modify"; it denies either by returning a verdict with
outcome "deny" and an error, or by raising an AirlockError, which the chain records as a deny verdict
before passing it on. The first deny ends the chain; guards after it do not run. Hot-path rule: a guard
with nothing to say returns a verdict it built once (see `Verdict` reuse in tokens.guard), so a call
that passes costs a list append per guard."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from airlock.errors import AirlockError
from airlock.guards.verdict import Verdict


class GuardedCall(Protocol):
    """What a guard sees of a call: who asks (tenant), for what (endpoint kind, model, route), and the
    request as parsed. Model calls implement it today; tool calls and mail will too."""

    @property
    def kind(self) -> str: ...  # the endpoint: chat, completions, embeddings, ...
    @property
    def tenant(self) -> str | None: ...
    @property
    def body(self) -> dict[str, Any]: ...
    @property
    def raw(self) -> bytes: ...
    @property
    def route(self) -> Any: ...  # the route chosen before the guards (gateway.routing.ResolvedRoute)
    @property
    def headers(self) -> Mapping[str, str]: ...  # the request's headers, case-insensitive
    def replace_body(self, body: dict[str, Any], raw: bytes) -> None: ...


class Guard(Protocol):
    name: str

    async def check(self, call: GuardedCall) -> Verdict: ...


class GuardChain:
    """The guards of one kind of call, in order. The order is the composition root's: pre-flight first
    (it may shrink the body the later guards look at)."""

    def __init__(self, guards: list[Guard]) -> None:
        self.guards = list(guards)

    def __len__(self) -> int:
        return len(self.guards)

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.guards]

    async def run(self, call: GuardedCall, decisions: list[dict[str, Any]]) -> None:
        """Check the call with every guard, appending each verdict's decision to `decisions` (the span's).
        Raises the denying guard's error after recording its verdict."""
        for guard in self.guards:
            try:
                verdict = await guard.check(call)
            except AirlockError as e:
                verdict = Verdict(guard.name, "deny", e.detail, verdict="rejected", facts=_facts(e), error=e)
            decisions.append(verdict.decision())
            if verdict.outcome == "deny":
                raise verdict.error or AirlockError(verdict.reason)


def _facts(err: AirlockError) -> dict[str, Any]:
    return {k: v for k, v in err.extra.items() if not k.startswith("_")}
