"""Rate limits on the model API, shared by every gateway process and replica: rules from the config's
`limits:` section, a guard that takes from one bucket per rule and partition, and the IETF
RateLimit-Policy / RateLimit headers of its answers."""

from airlock.limits.guard import LimitGuard
from airlock.limits.headers import policy_header, state_header

__all__ = ["LimitGuard", "policy_header", "state_header"]
