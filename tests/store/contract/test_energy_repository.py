"""EnergyReadingRepository, on every backend: readings by (device, time), repeats ignored, a different
value at a stored time refused with nothing of its batch stored, windows inclusive at both ends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from contract_racing import race

from airlock.errors import ReadingConflict
from airlock.store.energy import Reading


def test_readings_are_stored_once_and_read_by_device_and_window(open_energy_readings: Callable[[], Any]) -> None:
    readings = open_energy_readings()
    gpu0 = [Reading("gpu0", t, 1000 + t) for t in (30, 10, 20)]
    assert readings.add([*gpu0, Reading("gpu1", 10, 5)], "nvml") == 4
    assert readings.add([Reading("gpu0", 20, 1020), Reading("gpu0", 40, 1040)], "push") == 1  # one repeat
    assert readings.of("gpu0") == [Reading("gpu0", t, 1000 + t) for t in (10, 20, 30, 40)]  # oldest first
    assert readings.of("gpu0", 20, 30) == [Reading("gpu0", 20, 1020), Reading("gpu0", 30, 1030)]
    assert readings.of("gpu0", 41) == [] and readings.of("gpu9") == []
    big = Reading("gpu1", 2**62, 2**53 + 1)  # nanoseconds and millijoules past 32 bits (and float precision)
    assert readings.add([big], "nvml") == 1 and readings.of("gpu1", 2**61, 2**62) == [big]


def test_devices_are_sorted_by_code_point(open_energy_readings: Callable[[], Any]) -> None:
    readings = open_energy_readings()
    names = ["gpu-b", "GPU-a", "gpu-a", "_x", "é"]
    readings.add([Reading(d, 1, 1) for d in names], "push")
    assert readings.devices() == sorted(names)  # as SQLite sorts text: by bytes, not by a locale


def test_a_different_value_at_a_stored_time_stores_nothing_of_its_batch(
    open_energy_readings: Callable[[], Any],
) -> None:
    readings = open_energy_readings()
    readings.add([Reading("gpu0", 10, 100)], "nvml")
    with pytest.raises(ReadingConflict) as refused:
        readings.add([Reading("gpu0", 5, 50), Reading("gpu0", 10, 101), Reading("gpu1", 1, 1)], "push")
    assert refused.value.reading == Reading("gpu0", 10, 101) and refused.value.status == 409
    assert readings.of("gpu0") == [Reading("gpu0", 10, 100)] and readings.devices() == ["gpu0"]
    with pytest.raises(ReadingConflict):  # one time twice in a batch, two values
        readings.add([Reading("gpu2", 1, 1), Reading("gpu2", 1, 2)], "push")
    assert readings.devices() == ["gpu0"]


def test_two_samplers_adding_one_stretch_at_once_store_each_reading_once(
    open_energy_readings: Callable[[], Any],
) -> None:
    first, second = open_energy_readings(), open_energy_readings()
    batch = [Reading("gpu0", t, t * 7) for t in range(50)]
    new = race(lambda: first.add(batch, "nvml"), lambda: second.add(batch[::-1], "push"))
    assert sorted(new) == [0, 50]  # one stored them all, the other found them stored
    assert first.of("gpu0") == batch
