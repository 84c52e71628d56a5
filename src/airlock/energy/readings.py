"""GPU energy counter readings: (device, time, cumulative mJ), as posted and as stored. They are kept
through an EnergyReadingRepository (airlock.store.energy), which the deployment's stores open."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from airlock.errors import ReadingConflict
from airlock.store.energy import EnergyReadingRepository, Reading


class ReadingIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")  # no NUL or control characters
    t_ns: int = Field(gt=0, lt=2**62)
    energy_mj: int = Field(ge=0, lt=2**62)


class ReadingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    readings: list[ReadingIn] = Field(min_length=1, max_length=10_000)


__all__ = ["EnergyReadingRepository", "Reading", "ReadingConflict", "ReadingIn", "ReadingsIn"]
