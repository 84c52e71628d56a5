"""The simulator reports usage counted with a real tokenizer."""

from __future__ import annotations

import httpx

from airlock.tokens import get_encoding
from helpers import Sim


def test_usage_is_counted_with_the_real_tokenizer(sims: dict[str, Sim]) -> None:
    text = "東京の天気は晴れです。Привет! The quick brown fox."
    body = {"model": "sim-large", "messages": [{"role": "user", "content": text}], "max_tokens": 5}
    doc = httpx.post(f"{sims['sim-eu'].url}/v1/chat/completions", json=body).json()
    enc = get_encoding("cl100k_base")
    # OpenAI's format: 3 per message, plus role and content, plus 3 to prime the reply.
    assert doc["usage"]["prompt_tokens"] == 3 + 3 + len(enc.encode_ordinary("user")) + len(enc.encode_ordinary(text))
    assert doc["usage"]["completion_tokens"] == len(enc.encode_ordinary(doc["choices"][0]["message"]["content"]))


def test_prefix_cache_is_reported_on_the_second_call(sims: dict[str, Sim]) -> None:
    body = {
        "model": "sim-large",
        "messages": [{"role": "system", "content": "cached system prompt 42"}, {"role": "user", "content": "a"}],
    }
    first = httpx.post(f"{sims['sim-us'].url}/v1/chat/completions", json=body).json()
    second = httpx.post(f"{sims['sim-us'].url}/v1/chat/completions", json=body).json()
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] > 0


def test_error_injection(tmp_path: object) -> None:
    sim = Sim("x", "--error-rate", "1", "--error-kinds", "429")
    try:
        r = httpx.post(f"{sim.url}/v1/chat/completions", json={"model": "sim-large", "messages": []})
        assert r.status_code == 429
    finally:
        sim.stop()
