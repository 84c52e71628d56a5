"""Facts read from a recorded exchange's payloads, off the request path (in the batch writer):
provider-reported usage in all its parts, the served model, the response id, finish reasons and
tool calls, from either a JSON body or the raw SSE bytes of a stream."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson

from airlock.tokens.chat import message_text


def _int(value: Any) -> int | None:
    """A token count as an int, or None for anything that is not a whole non-negative number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _usage_columns(usage: dict[str, Any]) -> dict[str, Any]:
    prompt_details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
    completion_details = usage.get("completion_tokens_details") or usage.get("output_tokens_details")
    prompt_details = prompt_details if isinstance(prompt_details, dict) else {}
    completion_details = completion_details if isinstance(completion_details, dict) else {}
    cached = prompt_details.get("cached_tokens")
    if cached is None:
        cached = usage.get("cache_read_input_tokens")
    return {
        "gen_ai.usage.input_tokens": _int(usage.get("prompt_tokens", usage.get("input_tokens"))),
        "gen_ai.usage.output_tokens": _int(usage.get("completion_tokens", usage.get("output_tokens"))),
        "gen_ai.usage.cache_read.input_tokens": _int(cached),
        "gen_ai.usage.cache_creation.input_tokens": _int(usage.get("cache_creation_input_tokens")),
        "airlock.usage.reasoning_tokens": _int(completion_details.get("reasoning_tokens")),
        "airlock.usage.reported": True,
    }


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def from_json_response(body: bytes, want_text: bool = True) -> dict[str, Any]:
    doc = _json_object(body)
    if doc is None:
        return {}
    out: dict[str, Any] = {"gen_ai.response.id": doc.get("id"), "gen_ai.response.model": doc.get("model")}
    choices = doc.get("choices") or []
    reasons = [c.get("finish_reason") for c in choices if isinstance(c, dict) and c.get("finish_reason")]
    if reasons:
        out["gen_ai.response.finish_reasons"] = reasons
    calls = sum(len((c.get("message") or {}).get("tool_calls") or []) for c in choices if isinstance(c, dict))
    out["airlock.response.tool_call_count"] = calls
    if isinstance(doc.get("usage"), dict):
        out.update(_usage_columns(doc["usage"]))
    if not want_text:
        return out
    texts = []
    for c in choices:
        if isinstance(c, dict):
            if isinstance(c.get("message"), dict):
                texts.append(message_text(c["message"]))
            elif isinstance(c.get("text"), str):
                texts.append(c["text"])
    out[TEXT] = "\n".join(texts)
    return out


def sse_events(raw: bytes) -> list[bytes]:
    """The data payloads of an SSE byte stream, in order (comments and other fields skipped)."""
    events = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        if block.startswith(b"data: ") and b"\n" not in block:  # one data line: nearly every event there is
            events.append(block[6:])
            continue
        data = [line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
        if data:
            events.append(b"\n".join(data))
    return events


# What an event that is more than a content delta carries: a finish reason, usage, a tool call.
_TELLING = (
    b'"finish_reason":"',
    b'"finish_reason": "',
    b'"usage":{',
    b'"usage": {',
    b'"tool_calls"',
    b'"function_call"',
)


_ODD_SPACING = (b'" :', b'":  ')  # a space before a colon, or two after it: no server spaces JSON so


def _telling_events(raw: bytes) -> list[bytes] | None:
    """The first event and every event that is more than a content delta, found with byte searches over
    the whole stream instead of parsing it event by event (a 1,000-token stream held the writer's GIL
    for 1.6 ms, delaying the next request's first token; this takes about a third). None unless each
    of those events is one whole `data:` line, the shape OpenAI-compatible servers send; the caller then
    reads the stream event by event."""
    if b"\r" in raw or not raw.startswith(b"data:") or any(odd in raw for odd in _ODD_SPACING):
        return None  # JSON spaced unlike any server's (`"usage" : {`): the markers might miss it
    starts = set()
    pos = 0
    for _ in range(3):  # the first events (one that is not JSON, or lacks the model, is skipped over)
        starts.add(pos)
        pos = raw.find(b"\n\n", pos) + 2
        if pos < 2 or pos >= len(raw):
            break
    for marker in _TELLING:
        i = raw.find(marker)
        while i >= 0:
            start = raw.rfind(b"\n", 0, i) + 1
            starts.add(start)
            end = raw.find(b"\n", i)
            i = raw.find(marker, end) if end >= 0 else -1
    out = []
    for start in sorted(starts):
        end = raw.find(b"\n", start)
        whole_event = (start == 0 or raw[start - 2 : start] == b"\n\n") and raw[end : end + 2] == b"\n\n"
        if end < 0 or not whole_event or not raw.startswith(b"data:", start):
            return None  # a line of a multi-line event, or a torn tail: read the stream event by event
        out.append(raw[start + 5 : end].lstrip(b" "))
    return out


def sse_chunks(raw: bytes) -> Iterator[dict[str, Any]]:
    """The JSON objects of an SSE stream's data events, skipping [DONE] and anything unparsable."""
    return _chunks(sse_events(raw))


def _chunks(events: list[bytes]) -> Iterator[dict[str, Any]]:
    for data in events:
        if data == b"[DONE]":
            continue
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if isinstance(chunk, dict):
            yield chunk


def from_sse_response(raw: bytes, want_text: bool = True) -> dict[str, Any]:
    """Facts of a streamed answer. Without `want_text` (no local count to make), events that can only
    carry a content delta are skipped unparsed, except the first (it names the response and model)."""
    out: dict[str, Any] = {}
    reasons: dict[int, str] = {}
    tool_calls: set[tuple[int, int]] = set()
    texts: list[str] = []
    events = None if want_text else _telling_events(raw)
    for chunk in _chunks(sse_events(raw) if events is None else events):
        out.setdefault("gen_ai.response.id", chunk.get("id"))
        if chunk.get("model"):
            out.setdefault("gen_ai.response.model", chunk.get("model"))
        for choice in chunk.get("choices") or []:
            idx = choice.get("index", 0)
            if choice.get("finish_reason"):
                reasons[idx] = choice["finish_reason"]
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                texts.append(delta["content"])
            elif isinstance(choice.get("text"), str):
                texts.append(choice["text"])
            for call in delta.get("tool_calls") or []:
                tool_calls.add((idx, call.get("index", 0)))
                fn = call.get("function") or {}
                texts.extend(str(fn[k]) for k in ("name", "arguments") if fn.get(k))
        if isinstance(chunk.get("usage"), dict):
            out.update(_usage_columns(chunk["usage"]))
    if reasons:
        out["gen_ai.response.finish_reasons"] = [reasons[k] for k in sorted(reasons)]
    out["airlock.response.tool_call_count"] = len(tool_calls)
    out[TEXT] = "".join(texts)
    return out


_REQUEST_PARAMS = (
    ("gen_ai.request.max_tokens", "max_completion_tokens", int),  # supersedes max_tokens when both are set
    ("gen_ai.request.max_tokens", "max_tokens", int),
    ("gen_ai.request.temperature", "temperature", float),
    ("gen_ai.request.top_p", "top_p", float),
    ("gen_ai.request.seed", "seed", int),
)


def from_request(body: bytes, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sampling parameters and tool count from the request the client sent (`doc`: already parsed)."""
    if not isinstance(doc, dict):
        doc = _json_object(body)
    if doc is None:
        return {}
    out: dict[str, Any] = {}
    for column, key, typ in _REQUEST_PARAMS:
        value = doc.get(key)
        if column not in out and isinstance(value, int | float) and not isinstance(value, bool):
            if (typ is int and not (isinstance(value, int) or value.is_integer())) or abs(value) >= 2**63:
                continue  # not a count a column can hold (e.g. a seed of 1e22)
            out[column] = typ(value)
    tools = doc.get("tools")
    out["airlock.request.tool_count"] = len(tools) if isinstance(tools, list) else 0
    out[DOC] = doc
    return out


TEXT, DOC = "_text", "_doc"  # intermediate facts, not columns


def count_locally(
    record: dict[str, Any],
    tokenizer: str,
    request: dict[str, Any] | None,
    response_text: str | None,
    resolve: Callable[[str], Any] | None = None,
) -> None:
    """Local token counts with the model's own tokenizer, and the request's script mix."""
    from airlock.tokens import TokenizerUnavailable, get_tokenizer
    from airlock.tokens.chat import count_request, request_text
    from airlock.tokens.scripts import dominant_script, script_mix

    try:
        tok = (resolve or get_tokenizer)(tokenizer)
    except TokenizerUnavailable as e:
        record["airlock.local.tokenizer"] = f"unavailable: {e}"[:200]
        return
    record["airlock.local.tokenizer"] = tokenizer
    if request is not None:
        record["airlock.local.input_tokens"] = count_request(tok, request)
        mix = script_mix(request_text(request))
        record["airlock.script_mix"] = orjson.dumps(mix).decode()
        record["airlock.script"] = dominant_script(mix)
    if response_text is not None:
        record["airlock.local.output_tokens"] = tok.count(response_text)


def enrich(
    record: dict[str, Any],
    payloads: dict[str, bytes],
    tokenizer: str | None = None,
    resolve: Callable[[str], Any] | None = None,
    request_doc: dict[str, Any] | None = None,
) -> None:
    """Fill what the request and response say, never overwriting what the gateway already set; with a
    tokenizer, also the local counts and the script mix. `request_doc` is the request as the gateway
    parsed it, when it did."""
    facts: dict[str, Any] = {}
    request = payloads.get("airlock.payload.request")
    if request and record.get("kind") != "gateway.reject":
        facts.update(from_request(request, request_doc))
    sent = payloads.get("airlock.payload.upstream_request")
    if sent and sent is not request and sent != request and DOC in facts:
        # What the provider bills is what was sent (e.g. after a pre-flight truncation): count that.
        facts[DOC] = from_request(sent).get(DOC, facts[DOC])
    response = payloads.get("airlock.payload.response")
    fmt = record.get("_response_format")
    if response and fmt == "json":
        facts.update(from_json_response(response, want_text=bool(tokenizer)))
    elif response and fmt == "sse":
        facts.update(from_sse_response(response, want_text=bool(tokenizer)))
    request_doc, response_text = facts.pop(DOC, None), facts.pop(TEXT, None)
    for key, value in facts.items():
        if value is not None and record.get(key) is None:
            record[key] = value
    if tokenizer and record.get("airlock.local.input_tokens") is None:
        count_locally(record, tokenizer, request_doc, response_text, resolve)
