"""Reading a model's answer out of recorded or fresh response bytes (JSON or SSE), and comparing two."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from airlock.record.enrich import sse_chunks


@dataclass
class Answer:
    content: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # [{"id", "name", "arguments"}]
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


def _usage(doc: dict[str, Any], answer: Answer) -> None:
    usage = doc.get("usage")
    if isinstance(usage, dict):
        answer.input_tokens = usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else None
        answer.output_tokens = (
            usage.get("completion_tokens") if isinstance(usage.get("completion_tokens"), int) else None
        )


def parse_answer(raw: bytes) -> Answer:
    """The first choice of a chat completion, from its JSON body or its raw SSE stream."""
    answer = Answer()
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict):
        choices = doc.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        message: dict[str, Any] = choice["message"] if isinstance(choice.get("message"), dict) else {}
        content = message.get("content") if message else choice.get("text")
        answer.content = content if isinstance(content, str) else None
        answer.finish_reason = choice.get("finish_reason")
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict):
                fn: dict[str, Any] = call["function"] if isinstance(call.get("function"), dict) else {}
                answer.tool_calls.append(
                    {"id": call.get("id"), "name": fn.get("name"), "arguments": fn.get("arguments")}
                )
        _usage(doc, answer)
        return answer
    parts: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    for chunk in sse_chunks(raw):
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
    """Same tools with canonically equal arguments. Calls made together (in one turn) may come in any
    order, so they are compared as a multiset."""

    def key(calls: list[dict[str, Any]]) -> list[bytes]:
        return sorted(
            orjson.dumps([c["name"], canonical_arguments(c["arguments"])], option=orjson.OPT_SORT_KEYS) for c in calls
        )

    return key(a.tool_calls) == key(b.tool_calls)
