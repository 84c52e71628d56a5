"""Time to first token: sequential 1,000-token streams, one request per path per round, with aiohttp."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field

import aiohttp

from .common import STREAM_BODY, Target


@dataclass
class StreamResult:
    path: str
    first_byte_ms: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    errors: int = 0
    last_error: str = ""


def has_content(line: bytes) -> bool:
    if not line.startswith(b"data: {") or b'"content"' not in line:
        return False
    with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
        return bool(json.loads(line[6:])["choices"][0]["delta"].get("content"))
    return False


async def one_stream(session: aiohttp.ClientSession, target: Target) -> tuple[float, float, float]:
    """(time to the first body line, to the first content token, to the end of the stream), in ms."""
    headers = {"Authorization": f"Bearer {target.key}"}
    t0 = time.perf_counter()
    async with session.post(str(target.stream_url), json=STREAM_BODY, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {(await resp.text())[:160]}")
        first = first_byte = None
        async for line in resp.content:
            first_byte = first_byte or time.perf_counter() - t0
            if has_content(line):
                first = time.perf_counter() - t0
                break
        tail = b""
        async for chunk in resp.content.iter_any():
            tail = (tail + chunk)[-64:]
        total = time.perf_counter() - t0
    if first is None or first_byte is None or b"[DONE]" not in tail:
        raise RuntimeError("stream ended without content or without [DONE]")
    return first_byte * 1000, first * 1000, total * 1000


async def run_streams(targets: list[Target], n: int, warmup: int = 5) -> list[StreamResult]:
    results = {t.name: StreamResult(t.name) for t in targets}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=8)) as session:
        for i in range(warmup + n):
            for target in targets:  # interleaved: one request per path per round
                res = results[target.name]
                try:
                    first_byte, ttft, total = await one_stream(session, target)
                except (aiohttp.ClientError, TimeoutError, RuntimeError) as e:
                    res.errors += 1
                    res.last_error = str(e)[:160]
                    continue
                if i >= warmup:
                    res.first_byte_ms.append(first_byte)
                    res.ttft_ms.append(ttft)
                    res.total_ms.append(total)
    return list(results.values())
