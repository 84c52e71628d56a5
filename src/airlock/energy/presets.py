"""Bundled energy profiles, and where each number comes from.

Measured (public):
- Llama 3.1 8B on one H100 (vLLM 0.11.1), decode at batch size 64: 0.12 J per output token
  (ML.ENERGY Leaderboard v3.0, Dec 2025; "LLM Inference Energy: A Longitudinal Analysis", ml.energy blog,
  which also gives 0.20 J for the same setting under v2.0 / vLLM 0.5.4).
- ML.ENERGY v3.0 ("Diagnosing Inference Energy Consumption", 2025/2026): GPU utilisation alone moves
  energy per token 3-5x, and per-token energy falls as batch size grows until the GPU saturates.

Derived (our assumptions; replace them with your own measurements, or use measured mode):
- Batch curve: energy per decoded token scales as batch^-0.5 from batch 1 up to the measured point at
  64, and falls another 15% by 256 (batch 1 then costs 8x batch 64).
- Prefill: one eighth of a decoded token's energy at the same batch (prefill runs a prompt's tokens in
  one compute-bound pass; decode pays a full weight read per step).
- 70B: the 8B figures times 70/8 (energy per token roughly follows parameters read per token at equal
  utilisation; served on four H100s with tensor parallelism).
- cache_hit_discount 0.9: a prefix-cache hit skips a token's prefill compute; 10% is left for attending
  over it. idle_share 0.15: GPUs held for a model but idle between bursts. PUE 1.2: a modern data centre
  (the Uptime Institute's 2024 survey puts the industry average near 1.56; hyperscalers report ~1.1).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    tier: str
    points: tuple[tuple[int, float, float], ...]  # (batch, prefill J/token, decode J/token)
    cache_hit_discount: float = 0.9
    idle_share: float = 0.15
    pue: float = 1.2
    source: str = ""


def _curve(decode_at_64: float) -> tuple[tuple[int, float, float], ...]:
    out = []
    for batch in (1, 4, 16, 64):
        decode = decode_at_64 * (64 / batch) ** 0.5
        out.append((batch, decode / 8, decode))
    decode_256 = decode_at_64 * 0.85
    out.append((256, decode_256 / 8, decode_256))
    return tuple(out)


_ML_ENERGY = "ML.ENERGY Leaderboard v3.0 (H100, vLLM): Llama 3.1 8B decode 0.12 J/token at batch 64"

PRESETS: dict[str, Preset] = {
    "llama-3.1-8b-h100": Preset("8b", _curve(0.12), source=_ML_ENERGY),
    "llama-3.1-70b-h100": Preset("70b", _curve(0.12 * 70 / 8), source=_ML_ENERGY + ", scaled by 70/8"),
}
