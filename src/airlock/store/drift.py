"""What token drift reads from the record: per successful call, the provider's billed token count
against the local count, grouped by the dimensions drift is studied along."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

# What each dimension means on a span:
#   model      the model name Airlock sent upstream (else the one the provider answered with, else the
#              one asked for): what the pre-flight check looks its margins up by
#   script     the dominant writing system of the request's text ("none" when it was not detected)
#   upstream   the upstream that served the call
#   tokenizer  the local tokenizer that counted it
#   tenant     the calling tenant
DRIFT_DIMENSIONS = ("model", "script", "upstream", "tokenizer", "tenant")
TOKEN_SIDES = ("input", "output")  # the prompt, the completion


@dataclass(frozen=True)
class TokenRatio:
    key: tuple[str, ...]  # the call's value of each dimension asked for, in order ("None" where missing)
    start_ns: int
    ratio: float  # provider-reported / locally counted - 1


class DriftReader(Protocol):
    def token_ratios(self, by: Sequence[str], since_ns: int | None, side: str) -> list[TokenRatio]:
        """One entry per call with status ok, a provider-reported count and a positive local count of the
        `side` tokens (one of TOKEN_SIDES), started at or after since_ns (any time
        when None), in start time order. `by` names dimensions of DRIFT_DIMENSIONS; with none, every key
        is the empty tuple. Raises StoreError when the store fails."""
        ...
