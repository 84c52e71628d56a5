"""POST /v1/ledger/items and POST /v1/energy/readings on a real gateway process, and what the record
then says: a streamed call's bill in line items beside the posted ones."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import openai
import orjson
import pytest

from airlock.config import load_config
from airlock.ledger import cost_report
from airlock.store.embedded import DataDir
from airlock.store.embedded.energy import SQLiteEnergyReadings
from helpers import API_KEY, OTHER_KEY, Gateway, Sim, wait_recorded, write_config

AUTH = {"Authorization": f"Bearer {API_KEY}"}
READINGS_KEY = "sk-test-gpu-host"  # energy readings take a key of their own, not a tenant's
READINGS_AUTH = {"Authorization": f"Bearer {READINGS_KEY}"}


@pytest.fixture(scope="module")
def gw(sims: dict[str, Sim], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("ledger")
    price = [{"input_per_mtok": 2.0, "output_per_mtok": 8.0, "cached_read_per_mtok": 0.5}]
    g = Gateway(
        write_config(
            tmp,
            sims,
            model_extra={"prices": price},
            energy={
                "gpus": [{"device": "gpu-0", "upstream": "sim-eu"}],
                "readings_keys": [
                    {"name": "gpu-host", "key_sha256": hashlib.sha256(READINGS_KEY.encode()).hexdigest()}
                ],
            },
        )
    )
    yield g
    g.stop()


def post(gw: Gateway, path: str, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{gw.url}{path}", json=body, headers=AUTH if headers is None else headers)


def test_items_are_idempotent_by_id_and_a_changed_body_conflicts(gw: Gateway) -> None:
    item = {"id": "vq-1", "category": "vector_db", "quantity": 3, "unit_price_usd": 0.001, "task": "t-idem"}
    first = post(gw, "/v1/ledger/items", item)
    assert first.status_code == 201, first.text
    assert first.json() == {"tenant": "acme", "accepted": 1, "items": [{"id": "vq-1", "status": "created"}]}
    again = post(gw, "/v1/ledger/items", item)
    assert again.status_code == 200 and again.json()["items"][0]["status"] == "duplicate"
    changed = post(gw, "/v1/ledger/items", {**item, "quantity": 4})
    assert changed.status_code == 409
    assert changed.headers["content-type"].startswith("application/problem+json")
    assert changed.json()["item_id"] == "vq-1"
    # Another tenant's id space is its own.
    other = post(gw, "/v1/ledger/items", item, {"Authorization": f"Bearer {OTHER_KEY}"})
    assert other.status_code == 201 and other.json()["tenant"] == "globex"


def test_a_batch_is_stored_all_or_nothing(gw: Gateway) -> None:
    ok = {"id": "b-1", "category": "tool", "amount_usd": 0.01, "task": "t-batch"}
    clash = {"id": "vq-1", "category": "vector_db", "amount_usd": 9.0, "task": "t-idem"}
    r = post(gw, "/v1/ledger/items", {"items": [ok, clash]})
    assert r.status_code == 409
    r = post(gw, "/v1/ledger/items", {"items": [ok]})
    assert r.status_code == 201 and r.json()["items"] == [{"id": "b-1", "status": "created"}]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"id": "x", "category": "vector_db", "task": "t"}', 422, "amount_usd"),
        (b'{"id": "x", "category": "lunch", "amount_usd": 1, "task": "t"}', 422, "category"),
        (b'{"id": "x", "category": "tool", "amount_usd": -1, "task": "t"}', 422, "amount_usd"),
        (b'{"id": "x", "category": "tool", "amount_usd": 1}', 422, "trace_id or task"),
        (b'{"id": "x", "category": "tool", "amount_usd": 1, "task": "t", "colour": "red"}', 422, "colour"),
        (b'{"items": []}', 422, "items"),
        # a NUL in a name or note: PostgreSQL's text cannot hold it (a 503 there before it was refused)
        (b'{"id": "x", "category": "tool", "amount_usd": 1, "task": "t\\u0000x"}', 422, "NUL"),
        (b'{"id": "x", "category": "tool", "amount_usd": 1, "task": "t", "attributes": {"k": "\\u0000"}}', 422, "NUL"),
        # accepted and then never billed, or a 500 from an overflow, before a time range was enforced
        (
            b'{"id": "x", "category": "tool", "amount_usd": 1, "task": "t", "occurred_at": "2200-01-01T00:00:00Z"}',
            422,
            "occurred_at",
        ),
        (
            b'{"id": "x", "category": "tool", "amount_usd": 1, "task": "t", "occurred_at": "9999-12-31T00:00:00"}',
            422,
            "occurred_at",
        ),
    ],
)
def test_bad_items_get_problem_documents(gw: Gateway, body: bytes, status: int, needle: str) -> None:
    r = httpx.post(f"{gw.url}/v1/ledger/items", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert needle in r.text


def test_items_need_a_key_and_a_post(gw: Gateway) -> None:
    item = {"id": "k-1", "category": "tool", "amount_usd": 1, "task": "t"}
    assert post(gw, "/v1/ledger/items", item, {}).status_code == 401
    assert post(gw, "/v1/ledger/items", item, {"Authorization": "Bearer nope"}).status_code == 401
    r = httpx.get(f"{gw.url}/v1/ledger/items", headers=AUTH)
    assert r.status_code == 405 and r.headers["content-type"].startswith("application/problem+json")
    too_big = {"items": [{**item, "id": f"i-{n}", "description": "x" * 400} for n in range(200)]}
    assert post(gw, "/v1/ledger/items", too_big).status_code == 413
    assert httpx.get(f"{gw.url}/healthz").status_code == 200  # the worker is still serving


def test_energy_readings_are_stored_for_declared_devices(gw: Gateway) -> None:
    readings = [{"device": "gpu-0", "t_ns": 1_000 + i, "energy_mj": 5_000 + 7 * i} for i in range(3)]

    def push(body: object) -> httpx.Response:
        return post(gw, "/v1/energy/readings", body, READINGS_AUTH)

    r = push({"readings": readings})
    assert r.status_code == 201 and r.json() == {"accepted": 3, "new": 3}
    assert push({"readings": readings}).json() == {"accepted": 3, "new": 0}
    changed = [{**readings[0], "energy_mj": 1}]
    assert push({"readings": changed}).status_code == 409
    unknown = push({"readings": [{**readings[0], "device": "gpu-9"}]})
    assert unknown.status_code == 422 and "energy.gpus" in unknown.json()["detail"]
    assert push({"readings": [{"device": "gpu-0"}]}).status_code == 422
    assert push({"readings": [{**readings[0], "device": "gpu-0\x00"}]}).status_code == 422  # no NUL, no controls
    store = SQLiteEnergyReadings(DataDir.at(gw.data_dir).state_db)
    try:
        assert [r.energy_mj for r in store.of("gpu-0")] == [5_000, 5_007, 5_014]
    finally:
        store.close()


def test_a_streamed_task_is_billed_with_its_posted_items(gw: Gateway) -> None:
    """A stream is priced from the usage the recorder read out of it (never at zero), cached tokens at
    their own price, and the task's posted items sit beside it in the same bill."""
    headers = {
        "x-airlock-task": "t-stream",
        "x-airlock-attr-feature": "search",
        "x-airlock-attr-airlock.cost.tool": "0.003",  # a cost the app knows, carried on the span
    }
    system = {"role": "system", "content": "You are a careful assistant. " * 60}
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=API_KEY, max_retries=0) as client:
        for question in ("first question", "second question"):  # the second hits the simulated prefix cache
            stream = client.chat.completions.create(
                model="chat",
                stream=True,
                messages=[system, {"role": "user", "content": question}],
                extra_headers=headers,
            )
            for _ in stream:
                pass
    spans = wait_recorded(gw.data_dir, 2, where="\"airlock.task\" = 't-stream'")
    item = {"id": "review-1", "category": "human_review", "amount_usd": 0.40, "task": "t-stream"}
    assert post(gw, "/v1/ledger/items", item).status_code == 201
    report = cost_report(load_config(gw.config), ["task"])
    row = next(r for r in report.rows if r.key["task"] == "t-stream")
    expected = 0.0
    for s in spans:
        assert s["airlock.request.stream"] is True and s["airlock.usage.reported"] is True
        cached = s["gen_ai.usage.cache_read.input_tokens"] or 0
        uncached = s["gen_ai.usage.input_tokens"] - cached
        expected += (uncached * 2.0 + cached * 0.5 + s["gen_ai.usage.output_tokens"] * 8.0) / 1e6
    assert any(s["gen_ai.usage.cache_read.input_tokens"] for s in spans)
    assert row.by_category["inference"] == pytest.approx(expected) and expected > 0
    assert row.by_category["human_review"] == pytest.approx(0.40)
    assert row.by_category["tool"] == pytest.approx(2 * 0.003)
    assert row.estimated_usd == pytest.approx(row.by_category.get("telemetry_storage", 0.0))


def test_a_tenant_cannot_post_items_into_another_tenants_task_or_trace(gw: Gateway) -> None:
    """Regression (the probe's attack): globex posted $4,777 of items naming acme's task and trace, and
    `cost task` then showed them in acme's task. Now both are refused with a 403 that says why, and acme's
    task bill holds acme's lines only."""
    from click.testing import CliRunner

    from airlock.cli.main import cli

    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=API_KEY, max_retries=0) as client:
        client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "hello"}],
            extra_headers={"x-airlock-task": "t-owned", "x-airlock-attr-feature": "search"},
        )
    (acme_span,) = wait_recorded(gw.data_dir, 1, where="\"airlock.task\" = 't-owned'")
    globex = {"Authorization": f"Bearer {OTHER_KEY}"}
    by_task = {"id": "evil-1", "category": "human_review", "amount_usd": 4000.0, "task": "t-owned"}
    by_trace = {"id": "evil-2", "category": "tool", "amount_usd": 777.0, "trace_id": acme_span["trace_id"]}
    for item in (by_task, by_trace):
        r = post(gw, "/v1/ledger/items", item, globex)
        assert r.status_code == 403, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "another tenant" in r.json()["detail"] and "acme" not in r.text
    both = post(gw, "/v1/ledger/items", {"items": [{**by_task, "task": "t-globex"}, by_trace]}, globex)
    assert both.status_code == 403  # all or nothing: the innocent item of the batch is not stored either
    # The owner may post into its own task and trace.
    own = {"id": "own-1", "category": "tool", "amount_usd": 0.5, "trace_id": acme_span["trace_id"]}
    assert post(gw, "/v1/ledger/items", own).status_code == 201
    out = CliRunner().invoke(cli, ["cost", "task", "-c", str(gw.config), "t-owned", "--json"])
    assert out.exit_code == 0, out.output
    lines = orjson.loads(out.output)
    assert {line["tenant"] for line in lines} == {"acme"}
    assert sum(line["usd"] or 0 for line in lines if line["source"] == "item") == pytest.approx(0.5)
    report = cost_report(load_config(gw.config), ["tenant"])
    assert all(r.by_category.get("human_review", 0) < 1 for r in report.rows)
