"""Starting real processes (simulated upstreams, the gateway) on 127.0.0.1 for tests."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

API_KEY = "sk-test-acme"
OTHER_KEY = "sk-test-globex"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            if proc.stdout:
                proc.stdout.close()
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered:\n{out}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


class Proc:
    """A child process of ours, in its own process group, always cleaned up."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.args = args
        self.p = subprocess.Popen(
            [sys.executable, "-m", "airlock", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.p.poll() is None:
            os.killpg(self.p.pid, sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(5)
        if self.p.stdout and not self.p.stdout.closed:
            self.out = self.p.stdout.read().decode(errors="replace")
            self.p.stdout.close()
        return self.p.returncode

    out = ""


class Sim(Proc):
    def __init__(self, region: str, *extra: str) -> None:
        self.port = free_port()
        super().__init__(["sim", "--port", str(self.port), "--region", region, *extra])
        self.url = f"http://127.0.0.1:{self.port}"
        wait_http(f"{self.url}/v1/models", proc=self.p)

    def set(self, **changes: Any) -> None:
        httpx.post(f"{self.url}/sim/profile", json=changes).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/sim/stats").json())


def write_config(tmp: Path, sims: dict[str, Sim], model_extra: dict[str, Any] | None = None, **overrides: Any) -> Path:
    """A config with one upstream per sim, a failover route 'chat' over them in order, and two tenants.
    `model_extra` adds keys to every upstream's sim-large model (e.g. a context window)."""
    port = overrides.pop("port", None) or free_port()
    names = list(sims)
    cfg: dict[str, Any] = {
        "data_dir": str(tmp / "data"),
        "node": {"name": "gw-test", "region": "eu-west"},
        "server": {"host": "127.0.0.1", "port": port, "max_body_bytes": 65536},
        "recorder": {"segment_max_age_s": 0.2},
        "upstreams": [
            {
                "name": name,
                "base_url": f"{sim.url}/v1",
                "region": sim.args[sim.args.index("--region") + 1],
                "jurisdiction": "EU" if "eu" in name else "US",
                "deployment": "simulator",
                "api_key_env": "TEST_UPSTREAM_KEY",
                "models": [
                    {"name": "sim-large", "tokenizer": "cl100k_base", **(model_extra or {})},
                    {"name": "sim-small"},
                ],
            }
            for name, sim in sims.items()
        ],
        "routes": [{"alias": "chat", "targets": [{"upstream": n, "model": "sim-large"} for n in names]}],
        "api_keys": [
            {"tenant": "acme", "key_sha256": hashlib.sha256(API_KEY.encode()).hexdigest()},
            {"tenant": "globex", "key_env": "TEST_GLOBEX_KEY"},
        ],
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path = tmp / "airlock.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class Gateway(Proc):
    def __init__(self, config: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        cfg = yaml.safe_load(config.read_text())
        self.port = int(cfg["server"]["port"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = Path(cfg["data_dir"])
        self.config = config
        super().__init__(
            ["serve", "-c", str(config), *extra],
            env={"TEST_UPSTREAM_KEY": "upstream-secret-123", "TEST_GLOBEX_KEY": OTHER_KEY, **(env or {})},
        )
        wait_http(f"{self.url}/healthz", proc=self.p)


def wait_recorded(data_dir: Path, count: int, timeout: float = 10.0, where: str = "TRUE") -> list[dict[str, Any]]:
    """Wait until at least `count` spans matching `where` are readable, and return all of them."""
    from airlock.store.embedded import DataDir, DuckDBSpanReader

    reader = DuckDBSpanReader(DataDir.at(data_dir))
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = reader.sql(f"SELECT * FROM spans WHERE {where} ORDER BY start_ns")
        if len(rows) >= count:
            return rows
        time.sleep(0.05)
    raise AssertionError(f"only {len(rows)} of {count} spans recorded within {timeout}s")
