"""WriterRegistry, on every backend: a writer is registered once; its id is not taken twice."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from contract_racing import race

from airlock.errors import StoreConflict


def test_a_writer_id_is_registered_once(open_writer_registry: Callable[[], Any]) -> None:
    writers = open_writer_registry()
    writers.register_writer("w1", "node-a", "eu-west-1", 4242)
    writers.register_writer("w2", "node-a", "eu-west-1", 4243)
    with pytest.raises(StoreConflict):
        writers.register_writer("w1", "node-b", "us-east-1", 1)
    writers.register_writer("w3", "node-b", "us-east-1", 1)  # the registry still works after a refusal


def test_two_nodes_registering_one_writer_id_at_once_one_is_refused(open_writer_registry: Callable[[], Any]) -> None:
    first, second = open_writer_registry(), open_writer_registry()
    for n in range(5):
        outcome = race(
            lambda n=n: first.register_writer(f"w{n}", "node-a", "eu", 1),
            lambda n=n: second.register_writer(f"w{n}", "node-b", "eu", 2),
        )
        assert sorted(type(o).__name__ for o in outcome) == ["NoneType", "StoreConflict"], outcome
