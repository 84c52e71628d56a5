"""An energy counter trace with the behaviour NVML documents for nvmlDeviceGetTotalEnergyConsumption:
cumulative millijoules, refreshed by the GPU only every ~100 ms (so a reader polling faster sees the same
value twice), sampled at jittered times, and reset to zero when the driver reloads. Built here from a
power curve (idle 70 W, up to 650 W under load) because no GPU is lent to this project's tests; the
sampler and the attribution read it exactly as they read NVML."""

from __future__ import annotations

import random

from airlock.energy import Reading

T0 = 1_780_000_000 * 10**9
MS = 1_000_000


def power_w(t_ns: int, busy: list[tuple[int, int]]) -> float:
    active = sum(1 for s, e in busy if s <= t_ns < e)
    return 70.0 + min(580.0, 120.0 * active)


def trace(
    device: str,
    busy: list[tuple[int, int]],
    seconds: float = 10.0,
    poll_ms: float = 50.0,
    refresh_ms: float = 100.0,
    reset_at_s: float | None = None,
    seed: int = 7,
) -> list[Reading]:
    rng = random.Random(seed)
    step = MS  # integrate power in 1 ms steps
    energy_mj = 123_456_789.0
    refreshed_mj = energy_mj
    next_refresh = T0 + int(refresh_ms * MS)
    readings = []
    t = T0
    next_poll = T0
    end = T0 + int(seconds * 1e9)
    reset_done = False
    while t <= end:
        if reset_at_s is not None and not reset_done and t >= T0 + int(reset_at_s * 1e9):
            energy_mj = refreshed_mj = 0.0
            reset_done = True
        if t >= next_refresh:
            refreshed_mj = energy_mj
            next_refresh += int(refresh_ms * MS)
        if t >= next_poll:
            readings.append(Reading(device, t, int(refreshed_mj)))
            next_poll += int(poll_ms * MS * rng.uniform(0.8, 1.2))
        energy_mj += power_w(t, busy) * step / 1e6  # W x ns -> mJ: W * 1e-9 s * 1e3
        t += step
    return readings
