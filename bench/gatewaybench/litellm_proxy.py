"""LiteLLM's proxy: its venv (bench/.venv-litellm), config, start, and what it tried to reach outside."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .common import BENCH, CHAT_BODY, LITELLM_KEY, console
from .egress import EgressSink
from .procs import Proc, Procs, StartError, command_output, free_port, http, wait_ready

LITELLM_VENV = BENCH / ".venv-litellm"
# Lines in LiteLLM's log that show it tried to reach something outside this machine.
EGRESS_MARKERS = re.compile(
    r"ConnectError|Name or service not known|Temporary failure in name resolution|fetch attempt|getaddrinfo|ProxyError"
)


@dataclass
class LiteLLMStatus:
    available: bool = False
    reason: str = "skipped (--skip-litellm)"
    version: str = ""
    egress: list[str] = field(default_factory=list)


def ensure_litellm() -> str | None:
    """Create bench/.venv-litellm with litellm[proxy] when missing; returns why it could not, or None."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return None
    console.print("[bold]installing litellm[proxy] into bench/.venv-litellm (one time)...")
    log = BENCH / ".venv-litellm-install.log"
    python = shutil.which("python3") or sys.executable
    steps = [
        [python, "-m", "venv", str(LITELLM_VENV)],
        [str(LITELLM_VENV / "bin" / "pip"), "install", "litellm[proxy]"],
    ]
    with log.open("w") as out:
        for argv in steps:
            try:
                done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=1200, check=False)
            except (OSError, subprocess.TimeoutExpired) as e:
                return f"install failed: {e}"
            if done.returncode != 0:
                last = log.read_text(errors="replace").strip().splitlines()[-1:]
                return f"install failed ({' '.join(argv[-2:])} exited {done.returncode}): {' '.join(last)[:200]}"
    log.unlink(missing_ok=True)
    return None if exe.exists() else "install finished but bench/.venv-litellm/bin/litellm is missing"


def litellm_version() -> str:
    python = LITELLM_VENV / "bin" / "python"
    return command_output([str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"], 30)


def litellm_config(sim: str) -> str:
    return (
        "model_list:\n  - model_name: sim-large\n    litellm_params:\n      model: openai/sim-large\n"
        f"      api_base: {sim}\n      api_key: sk-dummy-upstream\n"
        "litellm_settings:\n  telemetry: false\n"
        f"general_settings:\n  master_key: {LITELLM_KEY}\n"
    )


def litellm_env(sink: EgressSink) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return (
        env
        | sink.env()
        | {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_MASTER_KEY": LITELLM_KEY,
            "LITELLM_LOG": "WARNING",
            "LITELLM_TELEMETRY": "False",
            "PYTHONUNBUFFERED": "1",
        }
    )


def start_litellm(procs: Procs, workdir: Path, sim: str, sink: EgressSink, status: LiteLLMStatus) -> str | None:
    """LiteLLM's proxy in front of the sim; its /v1 base URL, or None with the reason in status."""
    why = ensure_litellm()
    if why:
        status.reason = why
        return None
    status.version = litellm_version()
    config = workdir / "litellm.yaml"
    config.write_text(litellm_config(sim))
    port = free_port()
    argv = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1"]
    proc = procs.start("litellm", [*argv, "--port", str(port), "--num_workers", "1"], env=litellm_env(sink))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base + "/health/liveliness", 180)
    except StartError as e:
        status.reason = f"did not start: {start_failure(proc)}"
        console.print(f"[red]LiteLLM: {e}")
        return None
    code, text = http("POST", base + "/v1/chat/completions", CHAT_BODY, LITELLM_KEY)
    if code != 200:
        status.reason = f"started, but a test request got HTTP {code}: {text[:160]}"
        return None
    status.available, status.reason = True, "ok"
    return base + "/v1"


def start_failure(proc: Proc) -> str:
    code = proc.popen.poll()
    lines = [line.strip() for line in proc.lines()[-40:] if line.strip()]
    errors = [line for line in lines if re.search(r"error|exception|refused|invalid", line, re.I)]
    last = (errors or lines or ["(empty log)"])[-1][:200]
    return f"{'exited with code ' + str(code) if code is not None else 'no answer on /health/liveliness'}; log: {last}"


def litellm_egress(procs: Procs, sink: EgressSink) -> list[str]:
    seen = [f"via proxy: {a}" for a in sink.attempts]
    for proc in procs.items:
        if proc.name == "litellm":
            seen += [f"in its log: {line.strip()[:200]}" for line in proc.lines() if EGRESS_MARKERS.search(line)]
    return seen


def litellm_note(status: LiteLLMStatus) -> str:
    head = f"LiteLLM {status.version}: {status.reason}."
    if not status.egress:
        return head + " No outbound attempt seen (proxy sink and log markers)."
    shown = "; ".join(status.egress[:5]) + (f"; … {len(status.egress) - 5} more" if len(status.egress) > 5 else "")
    return head + f" It tried to reach outside: {shown}"
