"""The sampler: read each bound GPU's energy counter every interval and store the readings (in batches)
in the energy readings' repository (the control-plane state), where the energy report attributes them to requests."""

from __future__ import annotations

import threading
from collections.abc import Callable

from airlock.energy.readings import EnergyReadingRepository, Reading
from airlock.energy.sources import EnergySource


class Sampler:
    def __init__(
        self,
        source: EnergySource,
        devices: list[str],
        store: EnergyReadingRepository,
        interval_s: float,
        flush_every: int = 50,
        sleep: Callable[[float], bool] | None = None,
        stop_when_dry: bool = False,
    ) -> None:
        missing = [d for d in devices if d not in source.devices()]
        if missing:
            raise ValueError(f"the energy source has no device(s) {missing}; it has {source.devices()}")
        self.source = source
        self.devices = devices
        self.store = store
        self.interval_s = interval_s
        self.flush_every = flush_every
        self.stop_event = threading.Event()
        self._sleep = sleep or self.stop_event.wait  # returns True when asked to stop
        self.stop_when_dry = stop_when_dry  # a recording ends; a live counter that fails a read is retried
        self.stored = 0
        self.failed_reads = 0

    def run(self, max_rounds: int | None = None) -> int:
        """Sample until stopped, max_rounds, or (stop_when_dry) a round with no reading; returns readings stored."""
        pending: list[Reading] = []
        rounds = 0
        try:
            while not self.stop_event.is_set() and (max_rounds is None or rounds < max_rounds):
                rounds += 1
                dry = 0
                for device in self.devices:
                    reading = self.source.read(device)
                    if reading is None:
                        self.failed_reads += 1
                        dry += 1
                        continue
                    pending.append(reading)
                if dry == len(self.devices) and self.stop_when_dry:
                    break
                if len(pending) >= self.flush_every:
                    self.stored += self.store.add(pending, "nvml")
                    pending = []
                if self._sleep(self.interval_s):
                    break
        finally:
            if pending:
                self.stored += self.store.add(pending, "nvml")
        return self.stored

    def stop(self) -> None:
        self.stop_event.set()
