"""Pre-flight as the first guard of a model call: will the request fit the first target's context window?"""

from __future__ import annotations

import asyncio

import orjson

from airlock.errors import TokenizerUnavailable
from airlock.guards import GuardedCall, Verdict
from airlock.tokens.preflight import Preflight

# A prompt this large takes milliseconds to count: count it off the event loop (the tokenizers release
# the GIL).
_COUNT_IN_THREAD_BYTES = 32_768


class PreflightGuard:
    name = "preflight"

    def __init__(self, preflight: Preflight) -> None:
        self.preflight = preflight
        mode = preflight.cfg.mode
        self.policy = f"tokens.preflight.mode={mode}"
        # Built once: most calls fit by their size alone, and their verdict is always this one.
        self._fits_by_size = Verdict(
            self.name, "allow", "fits by size: bytes with the largest margin, plus max_tokens", self.policy, "fits"
        )
        self._not_applied = Verdict(
            self.name,
            "allow",
            "not checked: pre-flight is off" if mode == "off" else "not checked: no context window or tokenizer",
            self.policy,
            "unchecked",
        )

    async def check(self, call: GuardedCall) -> Verdict:
        pf, target = self.preflight, call.route.targets[0]
        if not pf.applies(target.model):
            return self._not_applied
        if not pf.may_exceed(target.model, target.upstream_model, call.body, len(call.raw)):
            return self._fits_by_size
        args = (target.model, target.upstream_model, call.body)
        try:  # raises ContextWindowExceeded, which the chain records as the deny verdict
            counted = (
                await asyncio.to_thread(pf.check, *args) if len(call.raw) > _COUNT_IN_THREAD_BYTES else pf.check(*args)
            )
        except TokenizerUnavailable as e:
            return Verdict(self.name, "skip", str(e), self.policy, "skipped")
        facts = {k: v for k, v in (counted.decision or {}).items() if k not in ("kind", "verdict")}
        if counted.body is None:
            return Verdict(self.name, "allow", "fits when counted", self.policy, "fits", facts)
        call.replace_body(counted.body, orjson.dumps(counted.body))
        dropped = facts.get("dropped_messages")
        return Verdict(
            self.name,
            "modify",
            f"truncated: dropped the {dropped} oldest turns to fit",
            self.policy,
            "truncated",
            facts,
        )
