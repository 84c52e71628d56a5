"""The supervisor's restart policy and the address claim, without starting a gateway."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from airlock.errors import AddressInUse
from airlock.gateway.address import claim_address
from airlock.gateway.supervisor import SUPERVISOR_STATE, RestartPolicy, describe_exit, worker_health
from helpers import free_port


def test_restarts_back_off_on_fast_failures_and_give_up_after_enough_in_a_row() -> None:
    policy = RestartPolicy(stable_s=10, first_delay_s=0.5, max_delay_s=3, give_up_after=4)
    delays, fails = [], 0
    for _ in range(3):
        delay, fails = policy.delay(ran_s=1.0, fast_failures=fails)
        delays.append(delay)
    assert delays == [0.5, 1.0, 2.0] and fails == 3
    assert policy.delay(ran_s=1.0, fast_failures=fails) == (None, 4)  # the fourth in a row: given up
    assert policy.delay(ran_s=60.0, fast_failures=3) == (0.5, 0)  # a worker that ran a while starts the count over
    assert policy.delay(ran_s=1.0, fast_failures=10 - 1)[0] is None


def test_an_exit_is_described_by_its_code_or_its_signal() -> None:
    assert describe_exit(-signal.SIGKILL) == {"exit_code": None, "signal": "SIGKILL"}
    assert describe_exit(3) == {"exit_code": 3, "signal": None}


def test_an_address_is_claimed_once_and_not_where_something_listens() -> None:
    port = free_port()
    claim = claim_address("127.0.0.1", port)
    try:
        with pytest.raises(AddressInUse, match=rf"127\.0\.0\.1:{port} is already served by .*pid {os.getpid()}"):
            claim_address("127.0.0.1", port)
    finally:
        claim.release()
    claim_address("127.0.0.1", port).release()  # free again once released
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as another serve's workers listen
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(AddressInUse, match=rf"cannot listen on 127\.0\.0\.1:{port}"):
            claim_address("127.0.0.1", port)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_health_is_degraded_while_a_worker_is_missing_and_ignores_a_dead_supervisors_file(tmp_path: Path) -> None:
    state = tmp_path / SUPERVISOR_STATE
    last_exit = {"pid": 1234, "exit_code": None, "signal": "SIGKILL", "at": 0.0}
    doc = {"pid": os.getpid(), "expected": 2, "pids": [os.getpid(), _dead_pid()], "restarts": 1, "given_up": 0}
    state.write_bytes(json.dumps({**doc, "last_exit": last_exit}).encode())
    health = worker_health(tmp_path)
    assert health["status"] == "degraded"
    assert health["workers"] == {"expected": 2, "alive": 1, "restarts": 1, "given_up": 0, "last_exit": last_exit}
    state.write_bytes(json.dumps({**doc, "pids": [os.getpid(), os.getpid()]}).encode())
    assert "status" not in worker_health(tmp_path) and worker_health(tmp_path)["workers"]["alive"] == 2
    state.write_bytes(json.dumps({**doc, "pid": _dead_pid()}).encode())
    assert worker_health(tmp_path) == {}  # a supervisor killed before it could remove its file
    assert worker_health(tmp_path / "nowhere") == {}
