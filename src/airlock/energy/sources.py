"""Where energy counter readings come from: NVML on a GPU host (nvidia-ml-py, imported only when used),
or a recording of readings (JSON lines of {device, t_ns, energy_mj}) replayed as if read live."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import orjson

from airlock.energy.readings import Reading
from airlock.errors import EnergyUnavailable


class EnergySource(Protocol):
    def devices(self) -> list[str]: ...
    def read(self, device: str) -> Reading | None: ...


class NvmlSource:
    """nvmlDeviceGetTotalEnergyConsumption: millijoules since the driver loaded (Volta and newer)."""

    def __init__(self) -> None:
        try:
            import pynvml  # from the nvidia-ml-py package: pip install 'airlock[gpu]'
        except ImportError as e:
            raise EnergyUnavailable("NVML needs nvidia-ml-py: pip install 'airlock[gpu]'") from e
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            raise EnergyUnavailable(f"NVML did not start (no NVIDIA driver or GPU here?): {e}") from e
        self.nvml: Any = pynvml
        self._handles: dict[str, Any] = {}
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            self._handles[str(i)] = handle
            self._handles[uuid if isinstance(uuid, str) else uuid.decode()] = handle

    def devices(self) -> list[str]:
        return list(self._handles)

    def read(self, device: str) -> Reading | None:
        import time

        handle = self._handles.get(device)
        if handle is None:
            return None
        try:
            mj = int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        except self.nvml.NVMLError:
            return None
        return Reading(device, time.time_ns(), mj)

    def close(self) -> None:
        self.nvml.nvmlShutdown()


def load_recording(path: Path) -> list[Reading]:
    out = []
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
            out.append(Reading(str(doc["device"]), int(doc["t_ns"]), int(doc["energy_mj"])))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}:{n}: not a reading {{device, t_ns, energy_mj}}: {e}") from None
    return out


class RecordedSource:
    """Readings recorded on a GPU host, returned in order, one per read, per device."""

    def __init__(self, readings: list[Reading]) -> None:
        self._by_device: dict[str, Iterator[Reading]] = {}
        grouped: dict[str, list[Reading]] = {}
        for r in readings:
            grouped.setdefault(r.device, []).append(r)
        for device, rs in grouped.items():
            self._by_device[device] = iter(sorted(rs, key=lambda r: r.t_ns))

    def devices(self) -> list[str]:
        return list(self._by_device)

    def read(self, device: str) -> Reading | None:
        it = self._by_device.get(device)
        return next(it, None) if it is not None else None
