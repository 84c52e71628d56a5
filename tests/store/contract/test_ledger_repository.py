"""LedgerItemRepository, on every backend: idempotent by (tenant, item_id), all or nothing per batch, a
conflicting body refused, two workers racing on one id agreeing on one stored item."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from contract_racing import race

from airlock.errors import ItemConflict
from airlock.store.ledger import LedgerItemRecord


def item(item_id: str, occurred_ns: int, tenant: str = "acme", sha: str = "s1", **extra: Any) -> LedgerItemRecord:
    return LedgerItemRecord(
        tenant=tenant,
        item_id=item_id,
        category="vector_db",
        amount_usd=0.125,
        occurred_ns=occurred_ns,
        request_sha=sha,
        **extra,
    )


def test_items_are_stored_once_and_read_back_whole_by_window(open_ledger_items: Callable[[], Any]) -> None:
    items = open_ledger_items()
    full = item(
        "a",
        100,
        quantity=3.5,
        unit="query",
        trace_id="t1",
        task="k1",
        feature="search",
        user_id="u1",
        vendor="pinecone",
        description="three queries",
        attributes={"region": "eu", "shard": "7"},
    )
    assert items.insert_all([full, item("b", 200), item("c", 300)]) == [True, True, True]
    assert items.insert_all([item("b", 200), item("d", 150)]) == [False, True]  # a retried POST, and a new one
    assert items.in_window(100, 300) == [full, item("d", 150), item("b", 200)]  # since inclusive, until not
    assert items.in_window(0, 2**62)[-1] == item("c", 300)
    assert items.in_window(301, 400) == []


def test_an_id_is_per_tenant(open_ledger_items: Callable[[], Any]) -> None:
    items = open_ledger_items()
    assert items.insert_all([item("a", 1, tenant="acme"), item("a", 2, tenant="globex", sha="s2")]) == [True, True]
    assert {(i.tenant, i.request_sha) for i in items.in_window(0, 10)} == {("acme", "s1"), ("globex", "s2")}


def test_a_conflicting_body_stores_nothing_of_its_batch(open_ledger_items: Callable[[], Any]) -> None:
    items = open_ledger_items()
    items.insert_all([item("a", 1)])
    with pytest.raises(ItemConflict) as refused:
        items.insert_all([item("new", 2), item("a", 1, sha="other"), item("z", 3)])
    assert refused.value.item_id == "a" and refused.value.status == 409
    assert [i.item_id for i in items.in_window(0, 10)] == ["a"]


def test_the_conflict_named_is_the_first_in_the_batch(open_ledger_items: Callable[[], Any]) -> None:
    items = open_ledger_items()
    items.insert_all([item("a", 1), item("z", 2)])
    with pytest.raises(ItemConflict) as refused:
        items.insert_all([item("z", 2, sha="other"), item("a", 1, sha="other")])
    assert refused.value.item_id == "z"


def test_one_id_twice_in_a_batch(open_ledger_items: Callable[[], Any]) -> None:
    items = open_ledger_items()
    assert items.insert_all([item("a", 1), item("a", 1)]) == [True, False]
    with pytest.raises(ItemConflict):
        items.insert_all([item("b", 1), item("b", 1, sha="other")])
    assert [i.item_id for i in items.in_window(0, 10)] == ["a"]


def test_two_workers_posting_one_id_at_once_store_it_once(open_ledger_items: Callable[[], Any]) -> None:
    """Each of two repositories (two processes) posts the same eight items in a different order, many
    rounds over: every item is stored exactly once, and exactly one side stored each."""
    first, second = open_ledger_items(), open_ledger_items()
    for round_no in range(10):
        batch = [item(f"r{round_no}-{n}", n) for n in range(8)]
        mine, theirs = race(lambda b=batch: first.insert_all(b), lambda b=batch: second.insert_all(b[::-1]))
        theirs = theirs[::-1]
        assert [a != b for a, b in zip(mine, theirs, strict=True)] == [True] * 8  # exactly one stored each
    assert len(first.in_window(0, 10)) == 80
