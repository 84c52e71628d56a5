"""How a simulated upstream behaves: latency, output length, errors, and its region label."""

from __future__ import annotations

from dataclasses import dataclass, field

ERROR_KINDS = ("500", "503", "429", "timeout", "disconnect")


@dataclass
class SimProfile:
    region: str = "sim-local"
    ttft_ms: float = 0.0
    tokens_per_s: float = 0.0  # 0 = as fast as possible
    output_tokens: int = 24  # default reply length when max_tokens is not given
    error_rate: float = 0.0
    error_kinds: tuple[str, ...] = ("500",)
    tokenizer: str = "cl100k_base"
    answer_style: str = "plain"  # plain | terse: a second "model" that answers differently
    seed: int = 0
    tool_calls: bool = True
    models: list[str] = field(default_factory=lambda: ["sim-large", "sim-small"])

    def validate(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be within 0..1")
        bad = [k for k in self.error_kinds if k not in ERROR_KINDS]
        if bad:
            raise ValueError(f"unknown error kinds {bad}; known: {', '.join(ERROR_KINDS)}")
