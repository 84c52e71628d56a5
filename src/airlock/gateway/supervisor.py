"""`airlock serve --workers N`: the parent starts N worker processes and keeps N running.

A worker that exits while the gateway is not stopping (killed, crashed) is restarted after a delay that
doubles with each fast failure of its slot (one within `stable_s` of its start), and its slot is given
up after `give_up_after` fast failures in a row; with every slot given up the serve exits 1. The parent
writes what it knows to run/supervisor.state in the data directory (not *.json: those are the workers'
own status files), and /healthz on any worker reports it through `worker_health`.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import multiprocessing.connection
import multiprocessing.synchronize
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import orjson

SUPERVISOR_STATE = "supervisor.state"
WorkerTarget = Callable[[Any, multiprocessing.synchronize.Event], None]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@dataclass(frozen=True)
class RestartPolicy:
    """When a worker that exited is started again, and when its slot is given up."""

    stable_s: float = 10.0  # a worker that ran this long did not fail fast
    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    give_up_after: int = 5  # fast failures in a row

    def delay(self, ran_s: float, fast_failures: int) -> tuple[float | None, int]:
        """(seconds to wait before the restart, or None to give the slot up; the slot's new count of fast
        failures in a row) for a worker that ran `ran_s` seconds, its slot having failed fast
        `fast_failures` times in a row before."""
        fast_failures = fast_failures + 1 if ran_s < self.stable_s else 0
        if fast_failures >= self.give_up_after:
            return None, fast_failures
        return min(self.max_delay_s, self.first_delay_s * 2 ** max(fast_failures - 1, 0)), fast_failures


def describe_exit(exitcode: int | None) -> dict[str, Any]:
    """A process's end as health reports it: its exit code, or the signal that ended it."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return {"exit_code": None, "signal": name}
    return {"exit_code": exitcode, "signal": None}


@dataclass
class _Slot:
    process: BaseProcess | None = None
    ready: multiprocessing.synchronize.Event | None = None
    started_at: float = 0.0
    fast_failures: int = 0
    restart_at: float | None = None
    given_up: bool = False
    serving: bool = False  # its process said it is ready


@dataclass
class _Record:
    restarts: int = 0
    given_up: int = 0
    last_exit: dict[str, Any] | None = None
    slots: list[_Slot] = field(default_factory=list)


class Supervisor:
    """Starts `count` processes running `target(config, ready)` and keeps them running until SIGTERM or
    SIGINT, which it passes on to them."""

    def __init__(
        self, target: WorkerTarget, config: Any, count: int, run_dir: Path, policy: RestartPolicy | None = None
    ) -> None:
        self.target, self.config, self.count = target, config, count
        self.state_path = run_dir / SUPERVISOR_STATE
        self.policy = policy or RestartPolicy()
        self.ctx = mp.get_context("spawn")
        self.record = _Record(slots=[_Slot() for _ in range(count)])
        self.stopping = False

    def _start(self, slot: _Slot) -> None:
        slot.ready = self.ctx.Event()
        slot.process = self.ctx.Process(target=self.target, args=(self.config, slot.ready), daemon=False)
        slot.process.start()
        slot.started_at, slot.restart_at, slot.serving = time.monotonic(), None, False

    def _live(self) -> list[BaseProcess]:
        return [s.process for s in self.record.slots if s.process is not None and s.process.is_alive()]

    def stop(self, _signum: int = signal.SIGTERM, _frame: object = None) -> None:
        """Pass the stop on to every worker, once (a second SIGTERM would cut a worker's clean-up short)."""
        if self.stopping:
            return
        self.stopping = True
        for p in self._live():
            with contextlib.suppress(ProcessLookupError):
                p.terminate()

    def start_all(self) -> int:
        """Start every worker and wait until each is serving: 0, or the exit code of one that could not
        start (the others are stopped then)."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        for slot in self.record.slots:
            self._start(slot)
        for slot in self.record.slots:
            assert slot.process is not None and slot.ready is not None
            while not slot.ready.wait(0.1):
                if not slot.process.is_alive():
                    self.stop()
                    for p in (s.process for s in self.record.slots if s.process is not None):
                        p.join()
                    return slot.process.exitcode or 1
                if self.stopping:
                    return self.finish()
            slot.serving = True
            self.write_state()  # health shows the workers as they come up (degraded until all serve)
        return 0

    def run(self) -> int:
        """Supervise until stopped: the exit code for `airlock serve`."""
        while not self.stopping:
            now = time.monotonic()
            pending = [s.restart_at for s in self.record.slots if s.restart_at is not None]
            timeout = max(0.0, min([*pending, now + 0.5]) - now)
            multiprocessing.connection.wait([p.sentinel for p in self._live()], timeout)
            if self.stopping:
                break
            changed = False
            for slot in self.record.slots:
                changed = self._check(slot, time.monotonic()) or changed
            if changed:
                self.write_state()
            if all(s.given_up for s in self.record.slots):
                print("airlock: every worker failed repeatedly; stopping", file=sys.stderr, flush=True)
                self.finish()
                return 1
        return self.finish()

    def _check(self, slot: _Slot, now: float) -> bool:
        """Notice a worker's exit, or start its replacement when due; whether anything changed."""
        if slot.restart_at is not None and now >= slot.restart_at:
            self._start(slot)
            self.record.restarts += 1
            return True
        p = slot.process
        if p is None:
            return False
        if p.is_alive():
            if not slot.serving and slot.ready is not None and slot.ready.is_set():
                slot.serving = True
                return True
            return False
        p.join()
        ended = describe_exit(p.exitcode)
        delay, slot.fast_failures = self.policy.delay(now - slot.started_at, slot.fast_failures)
        self.record.last_exit = {"pid": p.pid, **ended, "at": time.time()}
        how = f"signal {ended['signal']}" if ended["signal"] else f"exit code {ended['exit_code']}"
        slot.process = None
        if delay is None:
            slot.given_up = True
            self.record.given_up += 1
            print(
                f"airlock: worker {p.pid} ended ({how}) after {slot.fast_failures} fast failures in a row; "
                "not restarting it",
                file=sys.stderr,
                flush=True,
            )
        else:
            slot.restart_at = now + delay
            print(f"airlock: worker {p.pid} ended ({how}); restarting it in {delay:g} s", file=sys.stderr, flush=True)
        return True

    def finish(self) -> int:
        """Stop every worker, wait for them, and remove the state file: 0 if each ended cleanly."""
        self.stop()
        code = 0
        for slot in self.record.slots:
            if slot.process is not None:
                slot.process.join()
                if slot.process.exitcode != -signal.SIGTERM:  # stopped by us before it could stop itself
                    code = code or (slot.process.exitcode or 0)
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()
        return code

    def write_state(self) -> None:
        doc = {
            "pid": os.getpid(),
            "expected": self.count,
            "pids": [s.process.pid for s in self.record.slots if s.process is not None and s.serving],
            "restarts": self.record.restarts,
            "given_up": self.record.given_up,
            "last_exit": self.record.last_exit,
            "updated_at": time.time(),
        }
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        try:
            tmp.write_bytes(orjson.dumps(doc))
            os.replace(tmp, self.state_path)
        except OSError as e:  # health then reports no supervisor; serving goes on
            print(f"airlock: supervisor state not written: {e}", file=sys.stderr, flush=True)


def worker_health(run_dir: Path) -> dict[str, Any]:
    """What /healthz adds under a supervisor (nothing otherwise): {"workers": {expected, alive (started,
    serving and not exited), restarts, given_up, last_exit}}, plus "status": "degraded" while fewer are
    alive than expected. Spread it last into the health document, so that its status wins."""
    try:
        state = orjson.loads((run_dir / SUPERVISOR_STATE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    if not pid_alive(int(state.get("pid", -1))):
        return {}  # left behind by a supervisor that was killed
    alive = sum(1 for pid in state.get("pids", []) if pid_alive(int(pid)))
    workers = {
        "expected": state.get("expected"),
        "alive": alive,
        "restarts": state.get("restarts", 0),
        "given_up": state.get("given_up", 0),
        "last_exit": state.get("last_exit"),
    }
    health: dict[str, Any] = {"workers": workers}
    if alive < int(state.get("expected") or 0):
        health["status"] = "degraded"
    return health
