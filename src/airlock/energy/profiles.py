"""Energy from a profile: joules for a call's prefill (uncached and cache-hit) and decode tokens at the
batch size it ran in, grossed up for idle GPU time and the data centre's PUE."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from airlock.config.schema import Config, EnergyProfile
from airlock.energy.presets import PRESETS


@dataclass(frozen=True)
class Profile:
    tier: str
    points: tuple[tuple[int, float, float], ...]  # (batch, prefill J/token, decode J/token), by batch
    cache_hit_discount: float
    idle_share: float
    pue: float

    def per_token(self, batch: float) -> tuple[float, float]:
        """(prefill, decode) J per token at a batch size, interpolated on log(batch), clamped at the ends."""
        pts = self.points
        b = max(batch, 1.0)
        if b <= pts[0][0]:
            return pts[0][1], pts[0][2]
        for (b0, p0, d0), (b1, p1, d1) in itertools.pairwise(pts):
            if b <= b1:
                w = (math.log(b) - math.log(b0)) / (math.log(b1) - math.log(b0))
                return p0 + w * (p1 - p0), d0 + w * (d1 - d0)
        return pts[-1][1], pts[-1][2]

    def joules_many(
        self, input_tokens: np.ndarray, cached: np.ndarray, output: np.ndarray, batch: np.ndarray
    ) -> np.ndarray:
        """joules() over arrays (the same interpolation: np.interp clamps at the ends as per_token does)."""
        log_b = np.log(np.maximum(batch, 1.0))
        xs = np.log([p[0] for p in self.points])
        prefill = np.interp(log_b, xs, [p[1] for p in self.points])
        decode = np.interp(log_b, xs, [p[2] for p in self.points])
        cached = np.minimum(cached, input_tokens)
        gpu = prefill * (input_tokens - cached * self.cache_hit_discount) + decode * output
        return gpu / (1 - self.idle_share) * self.pue

    def joules(self, input_tokens: float, cached_tokens: float, output_tokens: float, batch: float) -> float:
        """Facility joules for one call: GPU joules for its work, plus its share of idle, times PUE."""
        prefill, decode = self.per_token(batch)
        cached = min(cached_tokens, input_tokens)
        gpu = prefill * (input_tokens - cached + cached * (1 - self.cache_hit_discount)) + decode * output_tokens
        return gpu / (1 - self.idle_share) * self.pue


def build_profile(spec: EnergyProfile) -> Profile:
    preset = PRESETS[spec.preset] if spec.preset else None
    points = tuple(sorted((p.batch, p.prefill_j_per_token, p.decode_j_per_token) for p in spec.points))
    if not points and preset is not None:
        points = preset.points

    def pick(value: float | None, field: str, fallback: float) -> float:
        if value is not None:
            return value
        return float(getattr(preset, field)) if preset is not None else fallback

    discount = pick(spec.cache_hit_discount, "cache_hit_discount", 0.9)
    idle = pick(spec.idle_share, "idle_share", 0.15)
    pue = pick(spec.pue, "pue", 1.2)
    tier = spec.tier or (preset.tier if preset else spec.model)
    return Profile(tier, points, discount, idle, pue)


class Profiles:
    """The profile for (upstream, model name): one naming the upstream wins over one for any upstream."""

    def __init__(self, config: Config) -> None:
        self._exact: dict[tuple[str, str], Profile] = {}
        self._any: dict[str, Profile] = {}
        for spec in config.energy.profiles:
            if spec.upstream:
                self._exact[(spec.upstream, spec.model)] = build_profile(spec)
            else:
                self._any[spec.model] = build_profile(spec)

    def get(self, upstream: str | None, model: str | None) -> Profile | None:
        if model is None:
            return None
        return self._exact.get((upstream or "", model)) or self._any.get(model)

    def __bool__(self) -> bool:
        return bool(self._exact or self._any)
