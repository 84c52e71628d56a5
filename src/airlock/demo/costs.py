"""The demo's bill beyond inference: prices and energy profiles for the simulated upstreams, and the line
items the agents' other services would post (vector database queries, internal API and tool calls,
embeddings, human review), sent to POST /v1/ledger/items like any service would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from airlock.cli.render import RecordTable
from airlock.demo.workload import TaskResult

# Per unit, USD. Illustrative list prices for the services a support/ops/scheduling agent leans on.
VECTOR_QUERY = 0.0008  # a managed vector database read
TOOL_CALL = {"ops": ("tool", 0.002, "cluster API call"), "scheduling": ("api", 0.004, "calendar API call")}
EMBED_PER_TOKEN = 0.13 / 1e6
REVIEW_PER_MINUTE = 0.60  # a human approving an ops action


def demo_cost_config() -> dict[str, Any]:
    """The ledger and energy sections of the demo's airlock.yaml."""
    return {
        "ledger": {
            "revenue_per_task": 1.50,
            "revenue_per_task_by_feature": {"support-chat": 0.01},
            # The simulated upstreams stand in for GPUs we run: their calls' energy is billed as electricity.
            "electricity": {"usd_per_kwh": 0.15, "deployments": ["simulator"]},
        },
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


def print_bill_summary(console: Console, config_path: Path) -> None:
    """What a task cost, by feature, and its energy: the ledger and energy reports in brief."""
    from airlock.cli.cost import fmt_usd
    from airlock.config import load_config
    from airlock.energy.report import energy_report
    from airlock.ledger import cost_report

    config = load_config(config_path)
    bill = cost_report(config, ["feature"])
    t = RecordTable(title="The full bill per task, by feature (inference is only part of it)")
    for col in ("feature", "tasks", "cost per task", "inference share", "largest other line item per task", "margin"):
        t.add_column(col, justify="left" if col in ("feature", "largest other line item per task") else "right")
    for row in bill.rows:
        others = {c: v for c, v in row.by_category.items() if c != "inference"}
        largest = max(others, key=lambda c: others[c]) if others else None
        t.add_row(
            row.key["feature"],
            str(row.tasks),
            fmt_usd(row.cost_per_task),
            f"{row.inference_share:.1%}" if row.inference_share is not None else "-",
            f"{largest} {fmt_usd(others[largest] / row.tasks)}" if largest and row.tasks else "-",
            f"{row.gross_margin:.0%}" if row.gross_margin is not None else "-",
        )
    console.print(t)
    energy = energy_report(config, ["model_tier", "cache"])
    cells = ", ".join(
        f"{r['model_tier']} cache {r['cache']}: {r['tokens_per_j']:.2f}" for r in energy.rows if r["tokens_per_j"]
    )
    total = energy.total
    if total["calls"]:
        console.print(
            f"energy (profiles, batch from overlapping calls): {total['tokens_per_j']:.2f} tokens/J overall "
            f"({cells}); {total['wh_per_task']:.4f} Wh and {total['gco2e'] / max(total['tasks'], 1):.3f} gCO2e "
            "per task"
        )
