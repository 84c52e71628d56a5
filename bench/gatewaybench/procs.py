"""Starting, watching and stopping the benchmark's processes; plain HTTP requests to them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import ROOT, console

NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class StartError(RuntimeError):
    """A process of the benchmark did not come up."""


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def lines(self) -> list[str]:
        """The lines of its log so far; none when the log cannot be read."""
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace").splitlines()
        return []

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.lines()[-lines:])


@dataclass
class Procs:
    """Every process the benchmark starts, each in its own process group so it can be stopped whole."""

    logdir: Path
    items: list[Proc] = field(default_factory=list)
    reported: set[str] = field(default_factory=set)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.logdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT, env=env,
                start_new_session=True,
            )  # fmt: skip
        proc = Proc(name, popen, log)
        self.items.append(proc)
        return proc

    def pid_of(self, name: str) -> int | None:
        return next((p.popen.pid for p in self.items if p.name == name), None)

    def died(self) -> list[str]:
        """A line for each process that exited since the last call, with the end of its log."""
        lines = []
        for proc in self.items:
            code = proc.popen.poll()
            if code is not None and proc.name not in self.reported:
                self.reported.add(proc.name)
                lines.append(f"{proc.name} exited during the run with code {code}; its log ends: {proc.tail(8)}")
        return lines

    def note_deaths(self, notes: list[str]) -> None:
        """Print and add to notes a line for each process that exited since the last call."""
        for line in self.died():
            console.print(f"[red]{line}")
            notes.append(line)

    def stop(self, name: str) -> None:
        """Stop one process (its whole group) and wait for it; its log stays readable."""
        for proc in self.items:
            if proc.name == name and proc.popen.poll() is None:
                _signal_group(proc.popen, signal.SIGTERM)
                try:
                    proc.popen.wait(8)
                except subprocess.TimeoutExpired:
                    _signal_group(proc.popen, signal.SIGKILL)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.popen.wait(2)
                self.reported.add(name)  # stopped on purpose, not a death to report

    def stop_all(self) -> None:
        for proc in reversed(self.items):
            _signal_group(proc.popen, signal.SIGTERM)
        deadline = time.monotonic() + 8
        for proc in reversed(self.items):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            _signal_group(proc.popen, signal.SIGKILL)  # the group may hold workers that outlived their parent
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(2)
        self.items.clear()


def _signal_group(popen: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, sig)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt so the finally blocks stop every process."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def command_output(argv: list[str], timeout: float) -> str:
    """The stripped stdout of a command that must succeed, or "?"."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=True).stdout.strip()
    return "?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: dict[str, Any] | None = None, key: str | None = None) -> tuple[int, str]:
    """One request with urllib, never through a proxy; returns (status, body text)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with NO_PROXY_OPENER.open(req, timeout=10) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def wait_ready(proc: Proc, url: str, timeout: float, method: str = "GET", body: dict[str, Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise StartError(f"{proc.name} exited with code {proc.popen.returncode}:\n{proc.tail()}")
        with contextlib.suppress(OSError):
            if http(method, url, body)[0] == 200:
                return
        time.sleep(0.25)
    raise StartError(f"{proc.name} not ready after {timeout:.0f} s:\n{proc.tail()}")
