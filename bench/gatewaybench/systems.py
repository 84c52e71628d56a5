"""The systems under test: the sims, the bare pass-throughs, Airlock and (optionally) LiteLLM, as paths to measure."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

from .common import (
    AIRLOCK,
    AIRLOCK_KEY,
    BENCH,
    CHAT_BODY,
    DIRECT,
    DUMMY_KEY,
    LITELLM,
    LITELLM_KEY,
    PASSTHROUGH,
    STREAM_TOKENS,
    Target,
    console,
)
from .egress import EgressSink
from .litellm_proxy import LiteLLMStatus, start_litellm
from .procs import Procs, free_port, http, wait_ready


def airlock_bin() -> str:
    here = Path(sys.executable).with_name("airlock")
    return str(here) if here.exists() else shutil.which("airlock") or "airlock"


def start_sim(procs: Procs, name: str, output_tokens: int) -> str:
    port = free_port()
    argv = [airlock_bin(), "sim", "--port", str(port), "--output-tokens", str(output_tokens), "--tokens-per-s", "0"]
    proc = procs.start(name, [*argv, "--ttft-ms", "0"])
    base = f"http://127.0.0.1:{port}/v1"
    wait_ready(proc, base + "/models", 30)
    return base


def start_passthrough(procs: Procs, name: str, upstream: str) -> str:
    port = free_port()
    proc = procs.start(name, [sys.executable, str(BENCH / "passthrough.py"), str(port), upstream])
    base = f"http://127.0.0.1:{port}/v1"
    wait_ready(proc, base + "/chat/completions", 30, "POST", CHAT_BODY)
    return base


def airlock_config(port: int, data_dir: Path, fast: str, stream: str) -> str:
    digest = hashlib.sha256(AIRLOCK_KEY.encode()).hexdigest()

    def upstream(name: str, url: str, model: str) -> str:
        return (
            f"  - name: {name}\n    base_url: {url}\n    region: local\n    jurisdiction: EU\n"
            f"    deployment: simulator\n    models: [{{name: {model}}}]\n"
        )

    return (
        f"data_dir: {data_dir}\nserver: {{host: 127.0.0.1, port: {port}}}\nupstreams:\n"
        + upstream("sim", fast, "sim-large")
        + upstream("sim-stream", stream, "sim-small")
        + f"api_keys:\n  - tenant: bench\n    key_sha256: {digest}\n"
    )


def start_airlock(procs: Procs, workdir: Path, fast: str, stream: str) -> str:
    port = free_port()
    config = workdir / "airlock.yaml"
    config.write_text(airlock_config(port, workdir / "airlock-data", fast, stream))
    proc = procs.start("airlock", [airlock_bin(), "serve", "-c", str(config)])
    wait_ready(proc, f"http://127.0.0.1:{port}/healthz", 60)
    return f"http://127.0.0.1:{port}/v1"


def start_all(procs: Procs, workdir: Path, sink: EgressSink, skip_litellm: bool) -> tuple[list[Target], LiteLLMStatus]:
    """Start everything; the paths to measure, in table order, and how LiteLLM fared."""
    console.print("[bold]starting sims, pass-throughs, Airlock" + ("" if skip_litellm else ", LiteLLM"))
    fast = start_sim(procs, "sim", 8)
    stream = start_sim(procs, "sim-stream", STREAM_TOKENS)
    passthrough = start_passthrough(procs, "passthrough", fast)
    passthrough_stream = start_passthrough(procs, "passthrough-stream", stream)
    airlock = start_airlock(procs, workdir, fast, stream)
    pid = procs.pid_of
    targets = [
        Target(DIRECT, fast + "/chat/completions", DUMMY_KEY, stream + "/chat/completions", pid=pid("sim")),
        Target(
            PASSTHROUGH,
            passthrough + "/chat/completions",
            DUMMY_KEY,
            passthrough_stream + "/chat/completions",
            pid=pid("passthrough"),
        ),
        Target(AIRLOCK, airlock + "/chat/completions", AIRLOCK_KEY, airlock + "/chat/completions", pid=pid("airlock")),
    ]
    status = LiteLLMStatus()
    if not skip_litellm:
        litellm = start_litellm(procs, workdir, fast, sink, status)
        if litellm:
            targets.append(Target(LITELLM, litellm + "/chat/completions", LITELLM_KEY, pid=procs.pid_of("litellm")))
    return targets, status


def check_targets(targets: list[Target]) -> list[str]:
    """One test request per path; a note for each that fails, which also marks the path's rows."""
    notes = []
    for t in targets:
        code, text = http("POST", t.url, CHAT_BODY, t.key)
        if code != 200:
            t.note = f"test request: HTTP {code}"
            notes.append(f"{t.name}: a test request got HTTP {code}: {text[:160]}")
    return notes
