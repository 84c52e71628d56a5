"""Two callers started at the same instant, for the contract suite's compare-and-set tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def race(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls on threads released together; each one's return value, or the exception it raised,
    in the calls' order."""
    results: list[Any] = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as e:  # handed back to the test, which says what it expects
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
