"""A real gateway whose data directory is on a tiny filesystem that fills up: every acknowledged
record is either in the record after a restart or counted as lost, where a full disk cannot refuse
the count (the loss files), and `airlock status` shows it.

The filesystem is a tmpfs of a few MiB mounted in a user and mount namespace of its own (`unshare
-rm`), held open by a sleeping process; the gateway runs inside those namespaces (`nsenter`), and the
test fills and frees the filesystem through /proc/<holder>/root. Skipped where unshare is not
permitted, except under CI (AIRLOCK_TEST_REQUIRE_BACKENDS=1), where that is a failure."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

import airlock
from airlock.cli.main import cli
from airlock.record.losses import read_losses
from helpers import API_KEY, OTHER_KEY, Sim, wait_http, wait_recorded, write_config

# The gateway starts with a cwd of / inside the namespaces: the code under test must be found by path.
_SOURCE = str(Path(airlock.__file__).resolve().parents[1])


class TinyFs:
    """A tmpfs of `size` at `mount`, seen only by processes started through `command`."""

    def __init__(self, mount: Path, size: str = "8m") -> None:
        mount.mkdir()
        self.mount = mount
        self.holder = subprocess.Popen(
            [
                "unshare",
                "-rm",
                "sh",
                "-c",
                f"mount -t tmpfs -o size={size} tmpfs '{mount}' && echo ok && exec sleep 600",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.holder.stdout is not None
        if self.holder.stdout.readline().strip() != b"ok":
            why = self.holder.communicate()[1].decode(errors="replace").strip()
            raise PermissionError(why or f"unshare exited with {self.holder.returncode}")
        self.outside = Path(f"/proc/{self.holder.pid}/root{mount}")  # the same files, from here
        self._fillers = 0

    def command(self, *args: str) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-U", "-m", "--preserve-credentials", *args]

    def free_bytes(self) -> int:
        st = os.statvfs(self.outside)
        return st.f_bavail * st.f_frsize

    def fill(self) -> None:
        """Write filler files until the filesystem refuses another byte."""
        chunk = b"\0" * 65536
        while self.free_bytes() > 0:
            self._fillers += 1
            fd = os.open(self.outside / f"filler-{self._fillers}", os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                while True:
                    os.write(fd, chunk if self.free_bytes() >= len(chunk) else chunk[:4096])
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
            finally:
                os.close(fd)

    def free(self) -> None:
        for filler in self.outside.glob("filler-*"):
            filler.unlink()

    def close(self) -> None:
        self.holder.kill()
        self.holder.communicate(timeout=5)  # and its pipes closed


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[TinyFs]:
    missing = [tool for tool in ("unshare", "nsenter") if shutil.which(tool) is None]
    try:
        if missing:
            raise PermissionError(f"{', '.join(missing)} not installed")
        fs = TinyFs(tmp_path / "tiny")
    except PermissionError as e:
        if os.environ.get("AIRLOCK_TEST_REQUIRE_BACKENDS") == "1":
            pytest.fail(f"a tiny filesystem could not be mounted (unshare -rm): {e}")
        pytest.skip(f"a tiny filesystem needs unshare -rm, not permitted here: {e}")
    yield fs
    fs.close()


class InsideGateway:
    """`airlock serve` inside the tiny filesystem's namespaces, in a process group of its own."""

    def __init__(self, fs: TinyFs, config: Path) -> None:
        self.url = f"http://127.0.0.1:{yaml.safe_load(config.read_text())['server']['port']}"
        env = {**os.environ, "TEST_UPSTREAM_KEY": "upstream-secret-123", "TEST_GLOBEX_KEY": OTHER_KEY}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_SOURCE, env.get("PYTHONPATH")) if p)
        self.p = subprocess.Popen(
            fs.command(sys.executable, "-m", "airlock", "serve", "-c", str(config)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        wait_http(f"{self.url}/healthz", proc=self.p)

    def stop(self) -> str:
        """SIGTERM, as a service manager stops it; its log."""
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
        try:
            out, _ = self.p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            out, _ = self.p.communicate(timeout=5)
        return out.decode(errors="replace")


def chat(client: httpx.Client, url: str, n: int, first: int) -> int:
    """`n` chat requests; how many were acknowledged (200)."""
    ok = 0
    for i in range(first, first + n):
        body = {"model": "chat", "messages": [{"role": "user", "content": f"question {i}"}]}
        r = client.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
        ok += r.status_code == 200
    return ok


def metric(client: httpx.Client, url: str, name: str) -> int:
    for line in client.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    raise AssertionError(f"{name} not in /metrics")


def spans(data_dir: Path) -> int:
    from airlock.store.embedded import DataDir, DuckDBSpanReader

    return int(DuckDBSpanReader(DataDir.at(data_dir)).sql("SELECT count(*) AS n FROM spans")[0]["n"])


def test_a_full_disk_loses_no_acknowledged_record_without_counting_it(tiny_fs: TinyFs, tmp_path: Path) -> None:
    """Regression (issue 12, "Silent loss"): with the disk full, acknowledged records held in memory
    and refused by the spill were gone after SIGTERM and a restart, and every count said 0 dropped (the
    counts lived in memory and in a status file the full disk would not take)."""
    sim = Sim("eu-west")
    try:
        # A short backlog, so that the request path spills (and that spill fails) as well as the writer.
        config = write_config(tmp_path, {"eu": sim}, recorder={"queue_size": 60})
        cfg = yaml.safe_load(config.read_text())
        cfg["data_dir"] = str(tiny_fs.mount / "data")
        config.write_text(yaml.safe_dump(cfg))
        data_outside = tiny_fs.outside / "data"
        gw = InsideGateway(tiny_fs, config)
        with httpx.Client(timeout=10) as client:
            # The disk fills, then has room again while the gateway runs: what it held is written.
            tiny_fs.fill()
            kept = chat(client, gw.url, 40, first=0)
            tiny_fs.free()
            wait_recorded(data_outside, kept, timeout=15)
            assert metric(client, gw.url, "airlock_recorder_dropped_total") == 0

            # It fills again and stays full through the shutdown.
            tiny_fs.fill()
            acknowledged = chat(client, gw.url, 200, first=1000)
            assert acknowledged == 200  # on_record_failure: serve
            assert metric(client, gw.url, "airlock_recorder_dropped_total") >= 200 - 60  # the request path's
        log = gw.stop()
        assert gw.p.returncode == 0, log

        tiny_fs.free()
        gw = InsideGateway(tiny_fs, config)
        try:
            recorded_after = spans(data_outside) - kept
            losses = read_losses(data_outside / "run")
            assert losses.dropped > 0
            # Every acknowledged record: in the record, or counted lost (here exactly: no record is both).
            assert recorded_after + losses.dropped == acknowledged, (recorded_after, losses)
            # ... and the gateway said so at shutdown, in one line with the whole count.
            assert "records were not recorded" in log and f"of {kept + acknowledged} records" in log, log
            assert set(losses.reasons) <= {
                "spill failed: No space left on device",
                "shutdown while the store failed: No space left on device",
            }

            # `airlock status`, without --all: the stopped worker that lost records, and the total.
            result = CliRunner().invoke(cli, ["status", "-d", str(data_outside)], env={"COLUMNS": "250"})
            assert result.exit_code == 1, result.output
            assert f"records lost (not in the record), counted in {data_outside / 'run'}/*.lost: {losses.dropped}" in (
                result.output.replace("\n", "")
            ), result.output
            assert "spill failed: No space left on device" in result.output
            stopped = [line for line in result.output.splitlines() if "│    no │" in line]
            assert stopped and str(losses.dropped) in stopped[0], result.output
        finally:
            gw.stop()
    finally:
        sim.stop()


def test_the_reserved_loss_file_takes_its_count_on_a_full_disk(tiny_fs: TinyFs) -> None:
    """A loss file reserved before the disk filled is rewritten in place after; a process starting on
    the full disk takes over a spare left by one that lost nothing; with none left, it is refused."""
    run = tiny_fs.mount / "run"
    (tiny_fs.outside / "run").mkdir()
    script = f"""
import sys
from airlock.record.losses import LossFile, loss_path
def loss_file(name):
    return LossFile(loss_path({str(run)!r}, name, "writer"), name, name, "writer")
f = loss_file("w1")
f.reserve()
spare = loss_file("w0")
spare.reserve()
spare.close()  # ended with nothing counted
print("reserved", flush=True)
sys.stdin.readline()  # the disk is full now
reasons = {{f"reason {{i}} " + "x" * 400: i + 1 for i in range(40)}}  # more than the block holds
print(f.write(sum(reasons.values()), reasons), flush=True)
for name in ("w2", "w3"):
    late = loss_file(name)
    try:
        late.reserve()
        print("reserved", flush=True)
    except OSError as e:
        print("refused", e.errno, flush=True)
    print(late.write(5, {{"late": 5}}), flush=True)
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (_SOURCE, os.environ.get("PYTHONPATH")) if p)}
    child = subprocess.Popen(
        tiny_fs.command(sys.executable, "-c", script),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().strip() == b"reserved"
    tiny_fs.fill()
    assert tiny_fs.free_bytes() == 0
    child.stdin.write(b"go\n")
    child.stdin.flush()
    out, err = child.communicate(timeout=20)
    assert child.returncode == 0, err.decode()
    assert out.decode().split("\n")[:5] == ["True", "reserved", "True", f"refused {errno.ENOSPC}", "False"], (out, err)

    losses = read_losses(tiny_fs.outside / "run")
    assert losses.unreadable == []
    assert losses.dropped == sum(range(1, 41)) + 5  # the count is whole, whatever reasons had to be folded
    assert sum(losses.reasons.values()) == losses.dropped
    assert sorted(f["writer_id"] for f in losses.files) == ["w1", "w2"]  # w2 in w0's block; w3 left nothing
    assert sorted(p.name for p in (tiny_fs.outside / "run").iterdir()) == ["w1.writer.lost", "w2.writer.lost"]
    assert (tiny_fs.outside / "run" / "w1.writer.lost").stat().st_size == 4096
