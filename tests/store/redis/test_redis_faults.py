"""The Redis backend when Redis goes away: a server of the test's own (redis-server on a Unix socket
in tmp_path, nothing saved) is killed, hung and restarted under a live client. Every failure is a
StoreUnavailable that names Redis but never its password, within about the half-second timeout; the
client works again once the server is back; and the fail policy answers in between, saying so."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from airlock.errors import StoreUnavailable
from airlock.store.fail_policy import FailPolicy
from airlock.store.redis import open_redis

T0 = 1_764_000_000.0


class OwnRedis:
    """A redis-server of the test's own, started and stopped at will on one socket path."""

    def __init__(self, folder: Path, *extra: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.folder = folder
        self.sock = folder / "r.sock"
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", "0", "--unixsocket", str(self.sock), "--save", "", "--appendonly", "no",
             "--dir", str(self.folder), *self.extra],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self._answers():  # its socket file appears before it listens
            assert self.proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not answer on its socket"
            time.sleep(0.01)

    def _answers(self) -> bool:
        if not self.sock.exists():
            return False
        with socket.socket(socket.AF_UNIX) as conn:
            try:
                conn.settimeout(1.0)
                conn.connect(str(self.sock))
                conn.sendall(b"PING\r\n")
                reply = conn.recv(64)
            except OSError:
                return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.sock.unlink(missing_ok=True)
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self.resume()
            self.kill()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def _unavailable_within(seconds: float, call: Callable[[], object]) -> StoreUnavailable:
    began = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        call()
    assert time.monotonic() - began < seconds
    return caught.value


def test_a_killed_redis_is_unavailable_at_once_and_used_again_when_back(own_redis: OwnRedis) -> None:
    store = open_redis(own_redis.url, "t:")
    try:
        assert store.take("k", 1e-6, 3, now=T0).remaining == 2
        own_redis.kill()
        error = _unavailable_within(2.0, lambda: store.take("k", 1e-6, 3, now=T0))
        assert "Redis at unix://" in str(error) and "taking from rate bucket 'k'" in str(error)
        _unavailable_within(2.0, lambda: store.claim("s", "k", "a", 60, now=T0))
        own_redis.start()  # an empty server: nothing was saved
        assert store.take("k", 1e-6, 3, now=T0).remaining == 2  # the same client, a new connection
        assert store.claim("s", "k", "a", 60, now=T0).state == "new"  # its scripts loaded again
    finally:
        store.close()


def test_a_hung_redis_times_out_in_about_half_a_second(own_redis: OwnRedis) -> None:
    store = open_redis(own_redis.url, "t:")
    try:
        store.check()
        own_redis.pause()
        began = time.monotonic()
        with pytest.raises(StoreUnavailable, match="Timeout"):
            store.add("b", 1, 10, 60, now=T0)
        assert 0.4 < time.monotonic() - began < 2.0
        own_redis.resume()
        assert store.add("b", 1, 10, 60, now=T0).total == 1  # the timed-out add was never applied
    finally:
        store.close()


def test_check_names_redis_and_never_its_password(tmp_path: Path) -> None:
    secret = "s3cret-Pa55"
    server = OwnRedis(tmp_path, "--requirepass", secret)
    server.start()
    try:
        wrong = open_redis(f"unix://{server.sock}?password=not-{secret}", "t:")
        error = _unavailable_within(2.0, wrong.check)
        assert "Redis at" in str(error) and secret not in str(error) and "password=***" in str(error)
        wrong.close()
        right = open_redis(f"unix://{server.sock}?password={secret}", "t:")
        right.check()
        assert secret not in repr(right)
        right.close()
    finally:
        server.stop()
    with pytest.raises(StoreUnavailable, match="the URL is not usable") as refused:
        open_redis(f"http://user:{secret}@127.0.0.1/0", "t:")
    assert secret not in str(refused.value)
    gone = open_redis(f"redis://user:{secret}@127.0.0.1:1/0", "t:")  # nothing listens on port 1
    error = _unavailable_within(2.0, gone.check)
    assert "redis://user:***@127.0.0.1:1/0" in str(error) and secret not in str(error)
    gone.close()


def test_keys_live_under_the_prefix_and_expire(own_redis: OwnRedis) -> None:
    import redis

    store = open_redis(own_redis.url, "airlock:eu:")
    raw = redis.Redis(unix_socket_path=str(own_redis.sock))
    try:
        store.take("tenant:acme", 100, 10, cost=5)
        store.add("tenant:acme", 5, 100, 86400)
        store.claim("tools", "k", "a", 0.1)
        names = sorted(raw.keys("*"))
        assert names and all(n.startswith(b"airlock:eu:") for n in names), names
        assert all(raw.pttl(n) > 0 for n in names)  # every key expires
        assert raw.pttl(b"airlock:eu:bucket:tenant:acme") <= 50 + 500  # when the bucket is full again
        time.sleep(0.7)  # the claim's 0.1 s and the half-second grace
        assert not raw.exists(b"airlock:eu:idem:5:tools:k") and not raw.exists(b"airlock:eu:bucket:tenant:acme")
        assert store.claim("tools", "k", "b", 60).state == "new"  # expired, by Redis's own clock
    finally:
        raw.close()
        store.close()


def test_the_fail_policy_answers_while_redis_is_away_and_says_so(own_redis: OwnRedis) -> None:
    store = open_redis(own_redis.url, "t:")
    clock = [0.0]  # the policies' monotonic clock, moved by the test alone
    opened = FailPolicy("open", probe_after_s=0.2, clock=lambda: clock[0])
    closed = FailPolicy("closed", probe_after_s=0.2, clock=lambda: clock[0])
    try:
        assert opened.buckets(store).take("k", 1e-6, 1, now=T0).decided_by == "store"
        refused = closed.buckets(store).take("k", 1e-6, 1, now=T0)
        assert not refused.allowed and refused.decided_by == "store"
        own_redis.kill()

        admitted = opened.buckets(store).take("k", 1e-6, 1, now=T0)
        assert admitted.allowed and admitted.decided_by == "fail-open"
        denied = closed.buckets(store).take("k2", 1e-6, 1, now=T0)
        assert not denied.allowed and denied.decided_by == "fail-closed" and denied.retry_after_s == 0.2
        budget = closed.budgets(store).add("b", 1, 10, 60, now=T0)
        assert not budget.allowed and budget.total is None and budget.decided_by == "fail-closed"
        assert opened.budgets(store).add("b", 1, 10, 60, now=T0).allowed
        claim = opened.keys(store).claim("s", "k", "a", 60, now=T0)
        assert claim.state == "new" and claim.decided_by == "fail-open"
        with pytest.raises(StoreUnavailable, match="fail policy is closed"):
            closed.keys(store).claim("s", "k", "a", 60, now=T0)
        opened.buckets(store).correct("k", 1e-6, 1, 5, now=T0)  # a correction lost, counted
        assert opened.store_down and closed.store_down and opened.lost == 1
        assert "Redis at" in (opened.last_error or "")

        own_redis.start()
        assert closed.buckets(store).take("k3", 1e-6, 1, now=T0).decided_by == "fail-closed"  # no probe yet
        clock[0] += 0.2
        back = closed.buckets(store).take("k3", 1e-6, 1, now=T0)
        assert back.allowed and back.decided_by == "store" and not closed.store_down
        assert opened.budgets(store).add("b", 1, 10, 60, now=T0).decided_by == "store"
    finally:
        store.close()


def test_the_fail_policy_asks_a_hung_redis_once_per_probe_not_once_per_call(own_redis: OwnRedis) -> None:
    store = open_redis(own_redis.url, "t:")
    policy = FailPolicy("open", probe_after_s=5.0)
    buckets = policy.buckets(store)
    try:
        buckets.take("k", 10, 10, now=T0)
        own_redis.pause()
        began = time.monotonic()
        answers = [buckets.take("k", 10, 10, now=T0) for _ in range(20)]
        assert time.monotonic() - began < 3.0  # one timeout, not twenty (ten seconds)
        assert all(a.allowed and a.decided_by == "fail-open" for a in answers)
        assert policy.decided == 20
    finally:
        own_redis.resume()
        store.close()
