"""Energy per request: from per-model profiles (J per prefill and decode token vs batch size), or measured
from GPU energy counters and attributed to the requests in flight in proportion to their tokens."""

from airlock.energy.presets import PRESETS
from airlock.energy.profiles import Profile, Profiles, build_profile
from airlock.energy.readings import EnergyReadingRepository, Reading

__all__ = ["PRESETS", "EnergyReadingRepository", "Profile", "Profiles", "Reading", "build_profile"]
