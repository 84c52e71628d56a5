"""Counting a chat request the way each model family formats it. The text of the messages is not all
a model sees: each family wraps messages in its own template, and those tokens are billed too.

Overheads per family (tokens), from each family's published chat format:
- openai (cl100k, o200k, gpt2): 3 per message, 1 more per `name`, 3 to prime the reply (OpenAI cookbook,
  "How to count tokens with tiktoken"); tool definitions are rendered as a typed namespace: about 12 per
  tool plus its serialised schema, plus 9 for the block (measured estimates, not a published rule).
- llama3: <|begin_of_text|> once; <|start_header_id|>role<|end_header_id|>\\n\\n ... <|eot_id|> per message
  (4 format tokens + the role); the reply header (4) at the end.
- mistral: <s> once, [INST] [/INST] around each user turn (2), </s> after each assistant turn (1).
- qwen (ChatML): <|im_start|>role\\n ... <|im_end|>\\n per message (5 including the role), <|im_start|>assistant\\n
  to prime the reply (3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from airlock.tokens.registry import Tokenizer


@dataclass(frozen=True)
class ChatFormat:
    per_message: int
    per_name: int
    reply_priming: int
    once: int
    per_tool: int
    tools_block: int
    role_counted: bool  # whether the role word is tokenized inside the per-message wrapper


FORMATS = {
    "openai": ChatFormat(
        per_message=3, per_name=1, reply_priming=3, once=0, per_tool=12, tools_block=9, role_counted=True
    ),
    "llama3": ChatFormat(
        per_message=4, per_name=0, reply_priming=4, once=1, per_tool=10, tools_block=20, role_counted=True
    ),
    "mistral": ChatFormat(
        per_message=2, per_name=0, reply_priming=0, once=1, per_tool=8, tools_block=4, role_counted=False
    ),
    "qwen": ChatFormat(
        per_message=4, per_name=0, reply_priming=3, once=0, per_tool=8, tools_block=40, role_counted=True
    ),
    "custom": ChatFormat(
        per_message=3, per_name=1, reply_priming=3, once=0, per_tool=12, tools_block=9, role_counted=True
    ),
}


def message_text(message: dict[str, Any]) -> str:
    """The text a message carries: its content (string or parts) and any tool calls' names and arguments."""
    parts: list[str] = []
    content = message.get("content")
    if isinstance(content, str):
        parts.append(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
    for call in message.get("tool_calls") or []:
        fn = (call.get("function") or {}) if isinstance(call, dict) else {}
        parts.append(str(fn.get("name", "")))
        parts.append(str(fn.get("arguments", "")))
    return "\n".join(p for p in parts if p)


def request_text(body: dict[str, Any]) -> str:
    """All the text of a request (for the script mix)."""
    if isinstance(body.get("messages"), list):
        return "\n".join(message_text(m) for m in body["messages"] if isinstance(m, dict))
    prompt = body.get("prompt", body.get("input"))
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        return "\n".join(p for p in prompt if isinstance(p, str))
    return ""


def count_request(tok: Tokenizer, body: dict[str, Any]) -> int:
    """Tokens of a chat, completion or embedding request as the model's family formats it."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        prompt = body.get("prompt", body.get("input"))
        if isinstance(prompt, list):
            return sum(tok.count(p) for p in prompt if isinstance(p, str))
        return tok.count(prompt) if isinstance(prompt, str) else 0
    fmt = FORMATS.get(tok.family, FORMATS["custom"])
    total = fmt.once + fmt.reply_priming
    for m in messages:
        if not isinstance(m, dict):
            continue
        total += fmt.per_message + tok.count(message_text(m))
        if fmt.role_counted:
            total += tok.count(str(m.get("role", "")))
        if m.get("name"):
            total += fmt.per_name + tok.count(str(m["name"]))
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        total += fmt.tools_block + sum(fmt.per_tool + tok.count(orjson.dumps(t).decode()) for t in tools)
    return total
