"""What the report says about the machine and the run's surroundings."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
from pathlib import Path

from .common import ROOT
from .litellm_proxy import LiteLLMStatus
from .procs import command_output


def read_first(path: str, key: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    return "?"


def machine_info(litellm: LiteLLMStatus) -> list[tuple[str, str]]:
    mem_kb = read_first("/proc/meminfo", "MemTotal").split()[0]
    mem = f"{int(mem_kb) / 1024 / 1024:.1f} GiB" if mem_kb.isdigit() else "?"
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.splitlines()[:1]
    return [
        ("date", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("nproc", str(len(os.sched_getaffinity(0)))),
        ("CPU", read_first("/proc/cpuinfo", "model name")),
        ("memory", mem),
        ("load average before the runs", " ".join(f"{x:.2f}" for x in os.getloadavg())),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
        ("wrk", " ".join(wrk[0].split()[:2]) if wrk else "?"),
        ("LiteLLM", litellm.version or "not installed"),
        ("Airlock commit", command_output(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], 10)),
    ]


def dir_size(path: Path) -> tuple[int, int]:
    """(files, bytes) under path."""
    files = [p for p in path.rglob("*") if p.is_file()] if path.exists() else []
    return len(files), sum(p.stat().st_size for p in files)


def recorder_note(data_dir: Path) -> str:
    """What Airlock's recorder said about itself at the end of the runs (its worker's status file):
    how its writer process was scheduled, how often it had to catch up, and any spills or drops."""
    notes = []
    for path in sorted((data_dir / "run").glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            s = json.loads(path.read_text())
            if s.get("stopped"):
                continue
            refused = f" (SCHED_IDLE refused: {s['writer_idle_refused']})" if s.get("writer_idle_refused") else ""
            notes.append(
                f"writer {s.get('writer_scheduling')}{refused}, {s.get('writer_catch_ups', 0)} catch-ups, "
                f"{s.get('accepted', 0)} records accepted, {s.get('spilled', 0)} spilled, {s.get('dropped', 0)} dropped"
            )
    return "Airlock's recorder at the end: " + ("; ".join(notes) or "no live status file found") + "."
