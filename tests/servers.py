"""The server backends the tests run against: a real PostgreSQL and a real Redis, started on Unix
sockets in one folder so that tests inside a network namespace with only loopback (`unshare -rn`)
still reach them through the file system.

    python tests/servers.py start .test-servers   # prints the environment the tests read
    python tests/servers.py stop .test-servers

`make test` starts them before the suite and stops them after it. PostgreSQL refuses to run as root,
so as root it runs as the `postgres` user that Debian's package creates. The tests read
AIRLOCK_TEST_POSTGRES_DSN and AIRLOCK_TEST_REDIS_URL (see tests/backends.py).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    if found:
        return found[0]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install Debian's postgresql package")
    return path


def _as_postgres(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def start_postgres(root: Path) -> str:
    data, sockets = root / "pg", root / "pg-socket"
    sockets.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        os.chown(sockets, user.pw_uid, user.pw_gid)
    if not (data / "PG_VERSION").exists():
        subprocess.run(
            _as_postgres([_postgres_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "airlock", "-E", "UTF8"]),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    options = f"-c listen_addresses='' -c unix_socket_directories={sockets} -c fsync=off -c max_connections=200"
    subprocess.run(
        _as_postgres(
            [_postgres_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "pg.log"), "-w", "start"]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    os.chmod(sockets, 0o777)
    return f"host={sockets} user=airlock dbname=postgres"


def start_redis(root: Path) -> str:
    folder = root / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    sock = folder / "redis.sock"
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server not found: install Debian's redis-server package")
    subprocess.run(
        [
            server,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "777",
            "--dir",
            str(folder),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
            "--pidfile",
            str(folder / "redis.pid"),
            "--logfile",
            str(folder / "redis.log"),
        ],
        check=True,
    )
    deadline = time.monotonic() + 10
    while not sock.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not open {sock}; see {folder / 'redis.log'}")
        time.sleep(0.05)
    return f"unix://{sock}"


def start(root: Path) -> dict[str, str]:
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    # Reachable from a user namespace, whose root may not pass a folder that only its owner may.
    root.chmod(0o755)
    env = {"AIRLOCK_TEST_POSTGRES_DSN": start_postgres(root), "AIRLOCK_TEST_REDIS_URL": start_redis(root)}
    (root / "env").write_text("".join(f"export {k}='{v}'\n" for k, v in env.items()))
    return env


def stop(root: Path) -> None:
    root = root.resolve()
    if (root / "pg" / "postmaster.pid").exists():
        subprocess.run(
            _as_postgres([_postgres_bin("pg_ctl"), "-D", str(root / "pg"), "-m", "fast", "-w", "stop"]),
            check=False,
            stdout=subprocess.DEVNULL,
        )
    pidfile = root / "redis" / "redis.pid"
    if pidfile.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            pid = int(pidfile.read_text().strip())
            os.kill(pid, 15)
            deadline = time.monotonic() + 10  # gone, not only told to go: a test that stops it relies on it
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.02)
        pidfile.unlink(missing_ok=True)
        (root / "redis" / "redis.sock").unlink(missing_ok=True)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit("usage: servers.py start|stop DIR")
    if sys.argv[1] == "start":
        for key, value in start(Path(sys.argv[2])).items():
            print(f"{key}={value}")
    else:
        stop(Path(sys.argv[2]))
