"""The demo's bill beyond inference: prices and energy profiles for the simulated upstreams, and the line
items the agents' other services would post (vector database queries, internal API and tool calls,
embeddings, human review), sent to POST /v1/ledger/items like any service would."""

from __future__ import annotations

from typing import Any

import httpx
from rich.console import Console

from airlock.demo.workload import TaskResult

# Per unit, USD. Illustrative list prices for the services a support/ops/scheduling agent leans on.
VECTOR_QUERY = 0.0008  # a managed vector database read
TOOL_CALL = {"ops": ("tool", 0.002, "cluster API call"), "scheduling": ("api", 0.004, "calendar API call")}
EMBED_PER_TOKEN = 0.13 / 1e6
REVIEW_PER_MINUTE = 0.60  # a human approving an ops action


def demo_cost_config() -> dict[str, Any]:
    """The ledger and energy sections of the demo's airlock.yaml."""
    return {
        "ledger": {"revenue_per_task": 1.50, "revenue_per_task_by_feature": {"support-chat": 0.01}},
        "energy": {
            "profiles": [
                {"model": "sim-large", "preset": "llama-3.1-70b-h100"},
                {"model": "sim-small", "preset": "llama-3.1-8b-h100"},
                {"model": "candidate-large", "preset": "llama-3.1-8b-h100"},
            ],
        },
    }


def task_items(r: TaskResult) -> list[dict[str, Any]]:
    """What one agent task's other services cost."""
    items: list[dict[str, Any]] = []
    base = {"trace_id": r.trace_id, "task": r.task_id, "feature": r.feature}
    if r.feature == "support":
        items.append(
            {**base, "id": f"{r.task_id}-vq", "category": "vector_db", "vendor": "vectordb",
             "quantity": 4 * max(r.tool_calls, 1), "unit": "query", "unit_price_usd": VECTOR_QUERY}
        )  # fmt: skip
        items.append(
            {**base, "id": f"{r.task_id}-emb", "category": "embeddings", "vendor": "embedder",
             "quantity": 1200, "unit": "token", "unit_price_usd": EMBED_PER_TOKEN}
        )  # fmt: skip
    elif r.tool_calls:
        category, price, what = TOOL_CALL[r.feature]
        items.append(
            {**base, "id": f"{r.task_id}-tools", "category": category, "vendor": r.feature, "quantity": r.tool_calls,
             "unit": "call", "unit_price_usd": price, "description": what}
        )  # fmt: skip
    if r.feature == "ops" and r.outcome == "ok":
        items.append(
            {**base, "id": f"{r.task_id}-review", "category": "human_review", "vendor": "on-call",
             "quantity": 1.5, "unit": "minute", "unit_price_usd": REVIEW_PER_MINUTE,
             "description": "approve the agent's proposed action"}
        )  # fmt: skip
    return items


def post_demo_costs(base_url: str, keys: dict[str, str], results: list[TaskResult], console: Console) -> None:
    """Post every task's line items (each tenant with its own key), then post them again as a retrying
    client would: the second time nothing is stored twice."""
    by_tenant: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        if r.trace_id and r.tenant in keys:
            by_tenant.setdefault(r.tenant, []).extend(task_items(r))
    created = duplicates = 0
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for attempt in range(2):
            for tenant, items in by_tenant.items():
                resp = client.post(
                    "/ledger/items", json={"items": items}, headers={"Authorization": f"Bearer {keys[tenant]}"}
                )
                resp.raise_for_status()
                for item in resp.json()["items"]:
                    created += item["status"] == "created"
                    duplicates += item["status"] == "duplicate" and attempt == 1
    console.print(
        f"ledger: {created} line items posted by the agents' other services (vector DB, tools, embeddings, "
        f"human review); posted again as a retry: {duplicates} recognised, none stored twice"
    )
