"""The limit stores the contract suite runs against: "embedded" (the state database in tmp_path) and
"redis" (the suite's Redis server, under the test's own key prefix). `open_store` gives one more
instance of the same store, as another process or replica would have: its own connection."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

BACKENDS = ["embedded", "redis"]


def store_opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """A function that opens another instance of this test's store; every one opened is closed after."""
    opened: list[Any] = []
    if request.param == "embedded":
        from airlock.store.embedded.limits import SQLiteLimits

        path = tmp_path / "state.sqlite3"

        def open_store() -> Any:
            opened.append(SQLiteLimits(path))
            return opened[-1]
    else:
        from airlock.store.redis import open_redis

        url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")

        def open_store() -> Any:
            opened.append(open_redis(url, prefix))
            return opened[-1]

    yield open_store
    for store in opened:
        store.close()


def opener_spec(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """How a child process opens the same store as `store_opener` did for `backend`: what
    `child_open` reads."""
    if backend == "embedded":
        return {"backend": "embedded", "path": str(tmp_path / "state.sqlite3")}
    return {
        "backend": "redis",
        "url": request.getfixturevalue("redis_url"),
        "prefix": request.getfixturevalue("redis_prefix"),
    }


# The source of a child process's opener, run by `python -c` (so it needs only the package).
CHILD_OPEN = """
def child_open(spec):
    if spec["backend"] == "embedded":
        from pathlib import Path
        from airlock.store.embedded.limits import SQLiteLimits
        return SQLiteLimits(Path(spec["path"]))
    from airlock.store.redis import open_redis
    return open_redis(spec["url"], spec["prefix"])
"""
