"""Tail sampling: whole traces decided once complete, kept by policy or at a dynamic per-key rate under a
span budget, with adjusted counts so that estimates stay unbiased and summaries so that totals stay exact."""

from airlock.sampling.facts import SpanFacts, TraceState
from airlock.sampling.sampler import Decision, Sampler

__all__ = ["Decision", "Sampler", "SpanFacts", "TraceState"]
