"""A scripted agent workload: multi-step, tool-using tasks driven through the gateway with the
official openai client, one trace per task. Tools run locally and return canned results; nothing
here reaches anything but the gateway on 127.0.0.1."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

import openai

from airlock.record.ids import new_span_id, new_trace_id

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "kubectl_get",
            "description": "Read Kubernetes resources.",
            "parameters": {
                "type": "object",
                "properties": {"namespace": {"type": "string"}, "kind": {"type": "string"}},
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "calendar_find_slot",
            "description": "Find a meeting slot.",
            "parameters": {
                "type": "object",
                "properties": {"attendees": {"type": "string"}, "week": {"type": "string"}},
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search_tickets",
            "description": "Search support tickets.",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    },
]

GOALS = [
    ("ops", "en-GB", "Check which pods in the payments namespace are crash-looping."),
    ("ops", "de-DE", "Prüfe die Deployments im Namespace checkout."),
    ("scheduling", "en-US", "Find a 30 minute slot for the platform team next week."),
    ("scheduling", "ja-JP", "来週、プラットフォームチームの30分の会議枠を探してください。"),
    ("support", "fr-FR", "Résume les tickets ouverts sur les remboursements."),
    ("support", "en-US", "Summarise open tickets about refunds."),
]


@dataclass
class TaskResult:
    task_id: str
    trace_id: str
    tenant: str
    feature: str
    steps: int = 0
    tool_calls: int = 0
    outcome: str = "ok"
    detail: str = ""
    request_ids: list[str] = field(default_factory=list)


def run_tool(name: str, arguments: str) -> str:
    """The tool's result, verbatim as the model will see it."""
    args = json.loads(arguments or "{}")
    if name == "kubectl_get":
        return json.dumps(
            {
                "items": [
                    {"name": f"{args.get('namespace', 'default')}-api-7f9c", "status": "Running"},
                    {"name": "worker-2", "status": "CrashLoopBackOff", "restarts": 14},
                ]
            }
        )
    if name == "calendar_find_slot":
        return json.dumps({"slots": ["Tue 10:00", "Thu 15:30"], "timezone": "Europe/Berlin"})
    return json.dumps(
        {"tickets": [{"id": 4182, "title": "Refund not received"}, {"id": 4190, "title": "Double charge"}]}
    )


def run_task(
    base_url: str, api_key: str, tenant: str, n: int, stream: bool, model: str = "agent-default", max_steps: int = 4
) -> TaskResult:
    rng = random.Random(n)
    feature, locale, goal = GOALS[n % len(GOALS)]
    trace_id, root_span = new_trace_id(), new_span_id()
    task_id = f"task-{n:03d}"
    result = TaskResult(task_id, trace_id, tenant, feature)
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)
    headers = {
        "traceparent": f"00-{trace_id}-{root_span}-01",
        "x-airlock-task": task_id,
        "x-airlock-session": f"session-{n // 3:03d}",
        "x-airlock-agent": f"planner>{feature}-agent",
        "x-airlock-attr-feature": feature,
        "x-airlock-attr-locale": locale,
        "x-airlock-attr-prompt_version": "v7" if rng.random() < 0.8 else "v8",
    }
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": f"You are the {feature} agent. Use tools; never act outside your scope."},
        {"role": "user", "content": goal},
    ]
    try:
        for _ in range(max_steps):
            result.steps += 1
            message, request_id = _step(client, model, messages, headers, stream)
            result.request_ids.append(request_id)
            calls = message.get("tool_calls") or []
            messages.append(message)
            if not calls:
                break
            for call in calls:
                result.tool_calls += 1
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call["id"],
                        "content": run_tool(call["function"]["name"], call["function"]["arguments"]),
                    }
                )
    except openai.APIStatusError as e:
        body = e.body if isinstance(e.body, dict) else {}
        result.outcome, result.detail = "error", f"HTTP {e.status_code}: {body.get('detail', e.message)}"[:100]
    except openai.APIConnectionError as e:
        result.outcome, result.detail = "error", f"connection: {e}"[:100]
    finally:
        client.close()
    return result


def _step(
    client: openai.OpenAI, model: str, messages: list[dict[str, Any]], headers: dict[str, str], stream: bool
) -> tuple[dict[str, Any], str]:
    # The SDK types messages and tools as TypedDicts; the workload builds them as plain dicts.
    sent_messages: Any = messages
    tools: Any = TOOLS
    if not stream:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=sent_messages, tools=tools, extra_headers=headers
        )
        return raw.parse().choices[0].message.model_dump(exclude_none=True), raw.headers["x-request-id"]
    raw_stream = client.chat.completions.with_raw_response.create(
        model=model, messages=sent_messages, tools=tools, stream=True, extra_headers=headers
    )
    content, calls = "", dict[int, dict[str, Any]]()
    chunks: Any = raw_stream.parse()
    for chunk in chunks:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for tc in choice.delta.tool_calls or []:
                slot = calls.setdefault(
                    tc.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
                )
                slot["id"] = tc.id or slot["id"]
                if tc.function:
                    slot["function"]["name"] += tc.function.name or ""
                    slot["function"]["arguments"] += tc.function.arguments or ""
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if calls:
        message["tool_calls"] = [calls[k] for k in sorted(calls)]
    return message, raw_stream.headers["x-request-id"]


def ask_support(base_url: str, api_key: str, locale: str, text: str, n: int) -> bool:
    """One single-turn support question; True when answered."""
    with openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30) as client:
        try:
            client.chat.completions.create(
                model="agent-default",
                max_tokens=8,
                messages=[
                    {"role": "system", "content": "You answer customer support questions briefly."},
                    {"role": "user", "content": text},
                ],
                extra_headers={
                    "x-airlock-task": f"support-{n:03d}",
                    "x-airlock-attr-locale": locale,
                    "x-airlock-attr-feature": "support-chat",
                },
            )
            return True
        except openai.APIError:
            return False
