"""The fidelity check: for each selected trace, whether its model calls can be replayed exactly, and
for each that cannot, what is missing.

A call is replayable when the record holds the exact bytes sent upstream (present and matching their
sha256), those bytes parse as a request, and every tool call the conversation refers to has its result
in the request verbatim, as the model received it. A named prompt must carry its version. A missing
seed, or a temperature above zero without one, does not block a replay but is reported: the candidate's
answers cannot then be compared for exact equality."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from airlock.errors import BlobCorrupt
from airlock.store.interface import TraceFilter
from airlock.store.replay import ReplaySelection, TraceSelection

MODEL_KINDS = ("model.chat", "model.completion", "model.embedding")


@dataclass
class SpanFidelity:
    span_id: str
    kind: str
    model: str | None
    missing: list[str] = field(default_factory=list)  # blocking
    caveats: list[str] = field(default_factory=list)  # not blocking
    replayed: bool = True  # False for a call a replay does not re-send (see replayed_span)

    @property
    def replayable(self) -> bool:
        return not self.missing


@dataclass
class TraceFidelity:
    trace_id: str
    spans: list[SpanFidelity]

    @property
    def replayable(self) -> bool:
        return any(s.replayed for s in self.spans) and all(s.replayable for s in self.spans)

    @property
    def missing(self) -> list[str]:
        return [f"{s.span_id}: {m}" for s in self.spans for m in s.missing]

    @property
    def caveats(self) -> list[str]:
        return sorted({c for s in self.spans for c in s.caveats})


def replayed_span(span: dict[str, Any]) -> bool:
    """The calls a replay re-sends: chat calls that were answered. A recorded failure (a 4xx/5xx, an
    abandoned stream) has no answer to compare with, and is listed as not replayed."""
    return (
        span.get("kind") == "model.chat"
        and span.get("status") == "ok"
        and bool(span.get("airlock.payload.upstream_request"))
    )


def _tool_findings(body: dict[str, Any]) -> list[str]:
    """Tool calls in the conversation whose result the request does not carry, and results without a call."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return []
    called: dict[str, str] = {}
    answered: set[str] = set()
    for m in messages:
        if not isinstance(m, dict):
            continue
        for call in m.get("tool_calls") or []:
            if isinstance(call, dict) and call.get("id"):
                called[str(call["id"])] = str((call.get("function") or {}).get("name", "?"))
        if m.get("role") == "tool":
            call_id = str(m.get("tool_call_id", ""))
            if not isinstance(m.get("content"), str | list):
                return [f"the result of tool call {call_id} has no content"]
            answered.add(call_id)
    findings = [
        f"the result of tool call {cid} ({name}) was never seen"
        for cid, name in called.items()
        if cid not in answered and _followed(messages, cid)
    ]
    findings += [
        f"a tool result answers call {cid}, which the conversation never made" for cid in answered if cid not in called
    ]
    return findings


def _followed(messages: list[Any], call_id: str) -> bool:
    """Whether the conversation went on after the assistant turn making this call (so it needed the result)."""
    for i, m in enumerate(messages):
        if isinstance(m, dict) and any(
            isinstance(c, dict) and str(c.get("id")) == call_id for c in m.get("tool_calls") or []
        ):
            return i < len(messages) - 1
    return False


def check_span(span: dict[str, Any], found: dict[str, Any]) -> SpanFidelity:
    result = SpanFidelity(span["span_id"], span["kind"], span.get("gen_ai.request.model"))
    digest = span.get("airlock.payload.upstream_request")
    if not digest:
        result.missing.append("the bytes sent upstream were not recorded")
        return result
    data = found.get(digest)
    if data is None:
        result.missing.append(f"payload {digest[:12]} is not in the blob store (dropped or deleted)")
        return result
    if isinstance(data, BlobCorrupt):
        result.missing.append(f"payload {digest[:12]} is corrupt: it fails its hash check")
        return result
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        result.missing.append("the request sent upstream does not parse as JSON")
        return result
    if not isinstance(body, dict) or "model" not in body:
        result.missing.append("the request sent upstream is not a model request")
        return result
    result.missing += _tool_findings(body)
    answer = span.get("airlock.payload.response")
    if answer and isinstance(found.get(answer), BlobCorrupt):
        result.missing.append(f"the recorded answer {answer[:12]} is corrupt: there is nothing sound to compare with")
    elif answer and answer not in found:
        result.missing.append(f"the recorded answer {answer[:12]} is not in the blob store")
    provider_tools = [
        str(t.get("type"))
        for t in body.get("tools") or []
        if isinstance(t, dict) and t.get("type") not in (None, "function")
    ]
    if provider_tools or "web_search_options" in body:
        result.missing.append(
            "the request asks the provider to run its own tools "
            f"({', '.join(provider_tools) or 'web search'}): a replay would run them for real"
        )
    if span.get("airlock.prompt.name") and not span.get("airlock.prompt.version"):
        result.missing.append(f"prompt {span['airlock.prompt.name']!r} was named without a version")
    if span["kind"] != "model.embedding" and body.get("seed") is None:
        temperature = body.get("temperature", 1.0)
        if isinstance(temperature, int | float) and temperature > 0:
            result.caveats.append("sampled (temperature > 0) without a seed: answers cannot match exactly")
        else:
            result.caveats.append("no seed")
    return result


@dataclass
class FidelityCheck:
    """The fidelity of each selected trace, newest first, and what the selection took of what it matched."""

    results: list[TraceFidelity]
    chosen: TraceSelection


def check_traces(selection: ReplaySelection, flt: TraceFilter, limit: int | None) -> FidelityCheck:
    """The fidelity of the newest `limit` original traces the filter matches (all of them when None)."""
    chosen = selection.traces(flt, limit)
    calls = selection.model_calls(chosen.trace_ids, MODEL_KINDS)
    payloads = selection.payloads(
        [
            d
            for spans in calls.values()
            for s in spans
            for d in (s.get("airlock.payload.upstream_request"), s.get("airlock.payload.response"))
            if d
        ]
    )
    out = []
    for trace_id in chosen.trace_ids:
        spans = calls.get(trace_id, [])
        digests = [
            d
            for s in spans
            for d in (s.get("airlock.payload.upstream_request"), s.get("airlock.payload.response"))
            if d
        ]
        found: dict[str, Any] = dict(payloads.get_many(digests))
        checked = []
        for s in spans:
            if replayed_span(s):
                checked.append(check_span(s, found))
            else:  # not re-sent by a replay (see replayed_span): say so, without blocking the trace
                note = SpanFidelity(s["span_id"], s["kind"], s.get("gen_ai.request.model"), replayed=False)
                note.caveats.append(f"not replayed: a {s['kind']} call recorded as {s['status']}")
                checked.append(note)
        out.append(TraceFidelity(trace_id, checked))
    return FidelityCheck(out, chosen)


def replayable_fraction(results: list[TraceFidelity]) -> float:
    return sum(r.replayable for r in results) / len(results) if results else 0.0
