"""Replay: what of the record can be re-executed against another model, and (to come) the replay itself."""

from airlock.replay.fidelity import SpanFidelity, TraceFidelity, check_traces

__all__ = ["SpanFidelity", "TraceFidelity", "check_traces"]
