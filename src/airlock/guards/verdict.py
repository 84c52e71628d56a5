"""What a guard decides about one call, and how the decision is kept on the call's span."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from airlock.errors import AirlockError

# allow: the call goes on unchanged; modify: it goes on with a body the guard changed (pre-flight's
# truncation); deny: it stops here with the guard's error; skip: the guard could not judge it (a
# tokenizer missing, say) and let it through, saying why.
Outcome = Literal["allow", "modify", "deny", "skip"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """One guard's decision. `verdict` is the guard's own word for it (pre-flight says fits, truncated,
    rejected or skipped), `outcome` what it means for the call; `facts` are what the decision rests on
    (estimates, limits, matched rules), kept with it on the span."""

    guard: str
    outcome: Outcome
    reason: str
    policy: str | None = None  # the rule or setting that decided (e.g. tokens.preflight.mode=truncate)
    verdict: str | None = None  # the guard's own word; the outcome when None
    facts: dict[str, Any] = field(default_factory=dict)
    error: AirlockError | None = None  # what the client is answered with when denied

    def decision(self) -> dict[str, Any]:
        """The verdict as recorded in the span's `airlock.decisions` (a JSON list of {kind, verdict, ...})."""
        out: dict[str, Any] = {
            "kind": self.guard,
            "verdict": self.verdict or self.outcome,
            "outcome": self.outcome,
            "reason": self.reason,
        }
        if self.policy is not None:
            out["policy"] = self.policy
        out.update(self.facts)
        return out
