"""Reading a model's answer out of recorded or fresh response bytes (JSON or SSE), and comparing two."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from airlock.record.enrich import sse_events


@dataclass
class Answer:
    content: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # [{"id", "name", "arguments"}]
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None

    def as_message(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            msg["tool_calls"] = [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in self.tool_calls
            ]
        return msg


def _usage(doc: dict[str, Any], answer: Answer) -> None:
    usage = doc.get("usage")
    if isinstance(usage, dict):
        answer.input_tokens = usage.get("prompt_tokens")
        answer.output_tokens = usage.get("completion_tokens")


def parse_answer(raw: bytes) -> Answer:
    """The first choice of a chat completion, from its JSON body or its raw SSE stream."""
    answer = Answer()
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict):
        choice = (doc.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        answer.content = message.get("content") if message else choice.get("text")
        answer.finish_reason = choice.get("finish_reason")
        for call in message.get("tool_calls") or []:
            fn = call.get("function") or {}
            answer.tool_calls.append({"id": call.get("id"), "name": fn.get("name"), "arguments": fn.get("arguments")})
        _usage(doc, answer)
        return answer
    parts: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    for data in sse_events(raw):
        if data == b"[DONE]":
            continue
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(chunk, dict):
            continue
        _usage(chunk, answer)
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                parts.append(delta["content"])
            for call in delta.get("tool_calls") or []:
                slot = calls.setdefault(call.get("index", 0), {"id": None, "name": "", "arguments": ""})
                slot["id"] = call.get("id") or slot["id"]
                fn = call.get("function") or {}
                slot["name"] += fn.get("name") or ""
                slot["arguments"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                answer.finish_reason = choice["finish_reason"]
    answer.content = "".join(parts) if parts else None
    answer.tool_calls = [calls[k] for k in sorted(calls)]
    return answer


def canonical_arguments(arguments: str | None) -> Any:
    """Arguments compared as data, not text: key order and whitespace do not matter."""
    try:
        return orjson.loads(arguments or "null")
    except orjson.JSONDecodeError:
        return arguments


def same_tool_calls(a: Answer, b: Answer) -> bool:
    """Same tools, canonically equal arguments, same order."""
    return [(c["name"], canonical_arguments(c["arguments"])) for c in a.tool_calls] == [
        (c["name"], canonical_arguments(c["arguments"])) for c in b.tool_calls
    ]
