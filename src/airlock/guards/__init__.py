"""Guards: the checks between choosing a route and forwarding a call (pre-flight, and next residency,
prompt resolution, tool policy, rate limits, budgets). Each returns a Verdict with its reason and
policy, and every verdict is recorded on the call's span."""

from airlock.guards.chain import Guard, GuardChain, GuardedCall
from airlock.guards.verdict import Outcome, Verdict

__all__ = ["Guard", "GuardChain", "GuardedCall", "Outcome", "Verdict"]
