"""On a GPU host: measure a real GPU workload's energy with Airlock's NVML sampler and compare it with
NVML's own counter read directly around the workload, and with power readings integrated over time.

    pip install 'airlock[gpu]'
    python bench/energy_gpu_check.py [--device 0] [--seconds 20] [--workload "python my_load.py"]

The default workload multiplies matrices with torch for --seconds when torch is installed. Prints the
three figures and the attribution check (attributed + idle == read). Needs no network."""

from __future__ import annotations

import argparse
import itertools
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from airlock.energy import EnergyReadings
from airlock.energy.attribution import Work, attribute
from airlock.energy.sampler import Sampler
from airlock.energy.sources import NvmlSource

TORCH_LOAD = (
    "import time, torch; a = torch.randn(8192, 8192, device='cuda:{device}'); t = time.time()\n"
    "while time.time() - t < {seconds}: b = a @ a\n"
    "torch.cuda.synchronize()"
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="0")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--interval-ms", type=float, default=100.0)
    ap.add_argument("--workload", default=None, help="A command to run as the load (default: torch matmuls).")
    args = ap.parse_args()
    source = NvmlSource()
    nvml, handle = source.nvml, source._handles[args.device]
    workload = shlex.split(args.workload) if args.workload else [
        sys.executable, "-c", TORCH_LOAD.format(device=args.device, seconds=args.seconds)
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        store = EnergyReadings(Path(tmp) / "state.sqlite3")
        sampler = Sampler(source, [args.device], store, args.interval_ms / 1000, flush_every=10)
        thread = threading.Thread(target=sampler.run, daemon=True)
        power: list[tuple[float, float]] = []
        thread.start()
        time.sleep(1.0)
        t0, e0 = time.time_ns(), nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        proc = subprocess.Popen(workload)
        while proc.poll() is None:
            power.append((time.monotonic(), nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0))  # mW -> W
            time.sleep(0.05)
        t1, e1 = time.time_ns(), nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        time.sleep(1.0)
        sampler.stop()
        thread.join()
        readings = [r for r in store.of(args.device) if t0 <= r.t_ns <= t1]
        store.close()
    direct_j = (e1 - e0) / 1000
    sampled_j = sum(max(b.energy_mj - a.energy_mj, 0) for a, b in itertools.pairwise(readings)) / 1000
    integrated_j = sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in itertools.pairwise(power))
    att = attribute(readings, [Work("load", t0, t1, t0, 0, 1000)], int(args.interval_ms * 1e6))
    print(f"workload exit {proc.returncode}, {(t1 - t0) / 1e9:.1f} s, {len(readings)} sampler readings")
    print(f"NVML counter, read directly around the load: {direct_j:,.1f} J")
    print(f"Airlock sampler, sum of its interval deltas:  {sampled_j:,.1f} J ({sampled_j / direct_j - 1:+.2%})")
    print(f"power readings integrated (trapezoid):        {integrated_j:,.1f} J ({integrated_j / direct_j - 1:+.2%})")
    print(f"attribution: attributed {att.attributed_j:,.1f} J + idle {att.idle_j:,.1f} J = read {att.read_j:,.1f} J")
    source.close()


if __name__ == "__main__":
    main()
