"""The simulator's HTTP surface: chat completions (streaming and tool calls), completions,
embeddings, models, and /sim/profile to change behaviour at run time (e.g. make a region fail)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import OrderedDict
from typing import Any

import orjson
from aiohttp import web

from airlock.sim.profile import ERROR_KINDS, SimProfile
from airlock.tokens import get_tokenizer
from airlock.tokens.chat import count_request, message_text

_WORDS = [
    "the",
    "request",
    "was",
    "handled",
    "and",
    "the",
    "ledger",
    "shows",
    "every",
    "line",
    "item",
    "for",
    "the",
    "task",
    "while",
    "the",
    "agent",
    "waits",
    "for",
    "approval",
    "before",
    "it",
    "touches",
    "any",
    "namespace",
    "outside",
    "its",
    "scope",
    "so",
    "nothing",
    "leaves",
    "the",
    "region",
]
_TERSE = ["ok", "noted", "done", "confirmed", "scoped", "approved", "recorded"]

PROFILE_KEY = web.AppKey("sim_profile", SimProfile)
MAX_REPLY_TOKENS = 4096  # a request's max_tokens sets the reply length, up to this


class Simulator:
    def __init__(self, profile: SimProfile) -> None:
        self.profile = profile
        self.tok = get_tokenizer(profile.tokenizer)
        self.rng = random.Random(profile.seed)
        self._counts: OrderedDict[bytes, int] = OrderedDict()
        self._seen_prefixes: set[str] = set()
        self.requests = 0
        self.streams_completed = 0
        self.streams_aborted = 0  # the client (e.g. the gateway) went away mid-stream
        self.last_body_sha256: str | None = None

    def count(self, text: str) -> int:
        key = text.encode()
        n = self._counts.get(key)
        if n is None:
            n = self.tok.count(text)
            self._counts[key] = n
            if len(self._counts) > 4096:
                self._counts.popitem(last=False)
        return n

    def prompt_tokens(self, body: dict[str, Any]) -> tuple[int, int]:
        """(input tokens, of which served from the simulated prefix cache): the request as the simulated
        model's family formats it (messages, names, tool definitions), counted with its tokenizer. A system
        prompt seen before counts as a cache hit."""
        total = count_request(self.tok, body)
        cached = 0
        messages = body.get("messages") or []
        first = messages[0] if messages and isinstance(messages[0], dict) else None
        if first is not None and first.get("role") == "system":
            text = message_text(first)
            digest = hashlib.sha256(text.encode()).hexdigest()
            if digest in self._seen_prefixes:
                cached = self.count(text)
            self._seen_prefixes.add(digest)
        return total, cached

    def reply_words(self, seed_text: str, n_tokens: int) -> list[str]:
        words = _TERSE if self.profile.answer_style == "terse" else _WORDS
        start = int(hashlib.sha256(seed_text.encode()).hexdigest()[:8], 16)
        return [words[(start + i) % len(words)] for i in range(max(1, n_tokens))]

    def injected_error(self) -> str | None:
        p = self.profile
        if p.error_rate > 0 and self.rng.random() < p.error_rate:
            return self.rng.choice(p.error_kinds)
        return None


def _fill(schema: Any, seed: str, words: list[str]) -> Any:
    """A value that satisfies a JSON schema's shape (type, properties, required, enum), chosen
    deterministically from the request: how the simulator answers structured-output requests."""
    if not isinstance(schema, dict):
        return None
    pick = int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16)
    if schema.get("enum"):
        return schema["enum"][pick % len(schema["enum"])]
    kind = schema.get("type", "object")
    if kind == "object":
        return {k: _fill(v, seed + k, words) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [_fill(schema.get("items") or {"type": "string"}, seed + "0", words)]
    if kind == "integer":
        return pick % 100
    if kind == "number":
        return (pick % 1000) / 10
    if kind == "boolean":
        return pick % 2 == 0
    return " ".join(words) or "simulated"


def _error_response(kind: str) -> web.Response:
    status = int(kind)
    body = {"error": {"message": f"simulated upstream error {status}", "type": "sim_injected", "code": status}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _tool_call(sim: Simulator, tools: list[Any], seed_text: str) -> dict[str, Any]:
    tool = tools[int(hashlib.sha256(seed_text.encode()).hexdigest()[:4], 16) % len(tools)]
    fn = tool.get("function", {}) if isinstance(tool, dict) else {}
    props = list(((fn.get("parameters") or {}).get("properties") or {}).keys())
    args = {p: f"{p}-{hashlib.sha256((seed_text + p).encode()).hexdigest()[:6]}" for p in props}
    call_id = "call_" + hashlib.sha256(seed_text.encode()).hexdigest()[:12]
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": fn.get("name", "tool"), "arguments": orjson.dumps(args).decode()},
    }


async def _maybe_fail(sim: Simulator, request: web.Request) -> web.StreamResponse | None:
    kind = sim.injected_error()
    if kind is None:
        return None
    if kind == "timeout":
        await asyncio.sleep(3600)
    if kind == "disconnect":
        assert request.transport is not None
        request.transport.close()
        return web.Response(status=500)
    return _error_response(kind)


def build_sim_app(profile: SimProfile) -> web.Application:
    profile.validate()
    sim = Simulator(profile)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[PROFILE_KEY] = profile

    async def chat(request: web.Request) -> web.StreamResponse:
        sim.requests += 1
        raw = await request.read()
        sim.last_body_sha256 = hashlib.sha256(raw).hexdigest()
        try:
            body = orjson.loads(raw)
            messages = body["messages"]
            model = body["model"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return web.json_response({"error": {"message": "bad request", "type": "invalid_request"}}, status=400)
        if model not in profile.models:
            return web.json_response({"error": {"message": f"model {model} not served here"}}, status=404)
        failed = await _maybe_fail(sim, request)
        if failed is not None:
            return failed
        seed_text = orjson.dumps(messages[-1:]).decode() + model
        prompt, cached = sim.prompt_tokens(body)
        tools = body.get("tools") or []
        last_role = messages[-1].get("role") if messages and isinstance(messages[-1], dict) else None
        call = _tool_call(sim, tools, seed_text) if tools and profile.tool_calls and last_role != "tool" else None
        n_out = body.get("max_tokens") or body.get("max_completion_tokens") or profile.output_tokens
        words = [] if call else sim.reply_words(seed_text, min(int(n_out), MAX_REPLY_TOKENS))
        text = f"[{profile.region}] " + " ".join(words) if words else None
        fmt = body.get("response_format")
        if text is not None and isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
            schema = (fmt.get("json_schema") or {}).get("schema") or {
                "type": "object",
                "properties": {"answer": {"type": "string"}},
            }
            text = orjson.dumps(_fill(schema, seed_text, words)).decode()
        completion = (
            sim.count(call["function"]["name"] + call["function"]["arguments"]) + 4 if call else sim.count(text or "")
        )
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }
        rid = "chatcmpl-sim-" + hashlib.sha256(f"{seed_text}{sim.requests}".encode()).hexdigest()[:16]
        finish = "tool_calls" if call else "stop"
        headers = {"x-sim-region": profile.region}
        if profile.ttft_ms:
            await asyncio.sleep(profile.ttft_ms / 1000)
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if call:
                message["tool_calls"] = [call]
            doc = {
                "id": rid,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": f"sim-{profile.region}",
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage,
            }
            if profile.tokens_per_s:
                await asyncio.sleep(completion / profile.tokens_per_s)
            return web.Response(body=orjson.dumps(doc), content_type="application/json", headers=headers)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        try:
            out = await _stream(request, profile, rid, model, words, call, finish, usage, include_usage, headers)
        except (ConnectionResetError, asyncio.CancelledError):
            sim.streams_aborted += 1
            raise
        sim.streams_completed += 1
        return out

    async def completions(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        failed = await _maybe_fail(sim, request)
        if failed is not None:
            return failed  # type: ignore[return-value]
        prompt = (
            body.get("prompt") if isinstance(body.get("prompt"), str) else orjson.dumps(body.get("prompt")).decode()
        )
        words = sim.reply_words(prompt, min(int(body.get("max_tokens") or profile.output_tokens), MAX_REPLY_TOKENS))
        text = " ".join(words)
        p, c = sim.count(prompt), sim.count(text)
        doc = {
            "id": "cmpl-sim",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
        }
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    async def embeddings(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) else [inputs]
        data, total = [], 0
        for i, item in enumerate(items):
            text = item if isinstance(item, str) else orjson.dumps(item).decode()
            total += sim.count(text)
            digest = hashlib.sha256(text.encode()).digest()
            data.append({"object": "embedding", "index": i, "embedding": [(b - 128) / 128 for b in digest[:16]]})
        doc = {
            "object": "list",
            "data": data,
            "model": body.get("model"),
            "usage": {"prompt_tokens": total, "total_tokens": total},
        }
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    async def models(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "owned_by": f"simulator-{profile.region}"} for m in profile.models
                ],
            }
        )

    async def set_profile(request: web.Request) -> web.Response:
        changes = await request.json()
        for key in ("error_rate", "ttft_ms", "tokens_per_s", "output_tokens"):
            if key in changes:
                setattr(profile, key, type(getattr(profile, key))(changes[key]))
        if "error_kinds" in changes:
            profile.error_kinds = tuple(k for k in changes["error_kinds"] if k in ERROR_KINDS)
        profile.validate()
        return web.json_response({"region": profile.region, "error_rate": profile.error_rate, "requests": sim.requests})

    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "region": profile.region,
                "requests": sim.requests,
                "streams_completed": sim.streams_completed,
                "streams_aborted": sim.streams_aborted,
                "last_body_sha256": sim.last_body_sha256,
            }
        )

    app.router.add_post("/sim/profile", set_profile)
    app.router.add_get("/sim/stats", stats)
    return app


async def _stream(
    request: web.Request,
    profile: SimProfile,
    rid: str,
    model: str,
    words: list[str],
    call: dict[str, Any] | None,
    finish: str,
    usage: dict[str, Any],
    include_usage: bool,
    headers: dict[str, str],
) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **headers})
    await resp.prepare(request)
    created = int(time.time())

    def event(delta: dict[str, Any], reason: str | None = None) -> bytes:
        chunk = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    delay = 1.0 / profile.tokens_per_s if profile.tokens_per_s else 0.0
    await resp.write(event({"role": "assistant", "content": "" if not call else None}))
    if call:
        await resp.write(
            event(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["function"]["name"], "arguments": ""},
                        }
                    ]
                }
            )
        )
        await resp.write(
            event({"tool_calls": [{"index": 0, "function": {"arguments": call["function"]["arguments"]}}]})
        )
    else:
        pieces = [f"[{profile.region}]", *words]
        for i, w in enumerate(pieces):
            if delay:
                await asyncio.sleep(delay)
            await resp.write(event({"content": w if i == 0 else " " + w}))
    await resp.write(event({}, finish))
    if include_usage:
        tail = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        }
        await resp.write(b"data: " + orjson.dumps(tail) + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


def run_sim(profile: SimProfile, host: str, port: int) -> None:
    import uvloop

    async def main() -> None:
        runner = web.AppRunner(build_sim_app(profile), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port, backlog=2048, reuse_port=True).start()
        print(f"airlock sim (simulated upstream, region {profile.region}) on http://{host}:{port}/v1", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())
