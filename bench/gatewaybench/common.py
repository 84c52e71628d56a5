"""What every part of the benchmark shares: paths, keys, request bodies, path names, the console."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
AIRLOCK_KEY = "sk-airlock-bench"
LITELLM_KEY = "sk-bench"
DUMMY_KEY = "sk-none"
CHAT_BODY = {"model": "sim-large", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8}
STREAM_TOKENS = 1000
STREAM_BODY = {
    "model": "sim-small",
    "messages": [{"role": "user", "content": "tell me a long story"}],
    "max_tokens": STREAM_TOKENS,
    "stream": True,
}
DIRECT, PASSTHROUGH, AIRLOCK, LITELLM = "direct (sim)", "bare pass-through", "Airlock", "LiteLLM"

console = Console()
if not console.is_terminal:
    console = Console(width=180)


@dataclass
class Target:
    """One path under test."""

    name: str
    url: str  # the chat completions URL
    key: str
    stream_url: str | None = None
    note: str = ""
    pid: int | None = None  # the process serving the path, for CPU time per request
