"""The error tree: errors.py's docstring draws it, and the classes must match the drawing; no AirlockError
is defined anywhere else in the package."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

import airlock
from airlock import errors
from airlock.errors import AirlockError

_NODE = re.compile(r"^(?P<indent>[\s│├└─]*?)(?P<name>[A-Z][A-Za-z]+)(?:\s+(?P<status>\d{3}))?(?:\s|$)")


def drawn_tree() -> dict[str, tuple[str | None, int | None]]:
    """name -> (parent name, status drawn beside it) from the tree in errors.py's docstring."""
    doc = errors.__doc__
    assert doc is not None
    tree: dict[str, tuple[str | None, int | None]] = {}
    path: list[str] = []  # the names on the way down to the current line
    for line in doc.splitlines():
        if not line.startswith("    ") or not (m := _NODE.match(line[4:])):
            continue
        level = len(m.group("indent")) // 4
        del path[level:]
        tree[m.group("name")] = (path[-1] if path else None, int(m.group("status")) if m.group("status") else None)
        path.append(m.group("name"))
    return tree


def defined_errors() -> dict[str, type[AirlockError]]:
    return {
        name: cls
        for name, cls in vars(errors).items()
        if inspect.isclass(cls) and issubclass(cls, AirlockError) and cls.__module__ == errors.__name__
    }


def test_the_docstring_draws_every_error_class_and_nothing_else() -> None:
    tree = drawn_tree()
    assert tree["AirlockError"] == (None, None) and len(tree) > 20
    assert set(tree) == set(defined_errors())


@pytest.mark.parametrize("name", sorted(defined_errors()))
def test_each_class_has_the_parent_and_status_the_tree_gives_it(name: str) -> None:
    parent, status = drawn_tree()[name]
    cls = defined_errors()[name]
    if parent is None:
        assert cls is AirlockError
        return
    assert cls.__bases__[0].__name__ == parent  # the first base; a second is a builtin (ValueError, KeyError)
    assert all(not issubclass(b, AirlockError) for b in cls.__bases__[1:])
    parent_status = defined_errors()[parent].status
    assert cls.status == (status if status is not None else parent_status)


def test_the_tree_is_as_pinned() -> None:
    """A change to the tree is deliberate: it shows up here as well as in the drawing."""
    expected = {
        "ConfigError": ("AirlockError", 500),
        "AddressInUse": ("Conflict", 409),
        "RequestTimeout": ("AirlockError", 408),
        "HeadersTooLarge": ("AirlockError", 431),
        "BadRequest": ("AirlockError", 400),
        "OtlpDecodeError": ("BadRequest", 400),
        "QueryError": ("BadRequest", 400),
        "ReplayError": ("BadRequest", 400),
        "ContextWindowExceeded": ("BadRequest", 400),
        "Unauthorized": ("AirlockError", 401),
        "Forbidden": ("AirlockError", 403),
        "NotFound": ("AirlockError", 404),
        "ModelNotFound": ("NotFound", 404),
        "MethodNotAllowed": ("AirlockError", 405),
        "Conflict": ("AirlockError", 409),
        "ItemConflict": ("Conflict", 409),
        "ReadingConflict": ("Conflict", 409),
        "GatewayRunning": ("Conflict", 409),
        "PayloadTooLarge": ("AirlockError", 413),
        "UnsupportedMediaType": ("AirlockError", 415),
        "Unprocessable": ("AirlockError", 422),
        "RateLimited": ("AirlockError", 429),
        "InternalError": ("AirlockError", 500),
        "TokenizerUnavailable": ("AirlockError", 500),
        "EgressRefused": ("AirlockError", 502),
        "UpstreamsExhausted": ("AirlockError", 502),
        "RecorderUnavailable": ("AirlockError", 503),
        "RecorderStartError": ("RecorderUnavailable", 503),
        "EnergyUnavailable": ("AirlockError", 503),
        "StoreError": ("AirlockError", 503),
        "StoreUnavailable": ("StoreError", 503),
        "StoreConflict": ("StoreError", 409),
        "BlobCorrupt": ("StoreError", 500),
    }
    actual = {n: (c.__bases__[0].__name__, c.status) for n, c in defined_errors().items() if c is not AirlockError}
    assert actual == expected


def test_each_problem_type_is_its_own() -> None:
    """Each class that names a problem type names its own (the base shares InternalError's "internal")."""
    slugs = [cls.slug for cls in defined_errors().values() if cls.__dict__.get("slug") and cls is not AirlockError]
    assert len(slugs) == len(set(slugs))


def all_modules() -> list[str]:
    """Every module under src/airlock, namespace packages (a folder with no __init__.py) included."""
    root = Path(airlock.__file__).parent
    names = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def subclasses(cls: type) -> set[type]:
    found: set[type] = set(cls.__subclasses__())
    for sub in list(found):
        found |= subclasses(sub)
    return found


def test_every_airlock_error_is_defined_in_errors_py() -> None:
    modules = all_modules()
    assert "airlock.store.embedded.blobs" in modules and "airlock.gateway.boundary" in modules
    for name in modules:
        importlib.import_module(name)
    elsewhere = sorted(
        f"{c.__module__}.{c.__qualname__}"
        for c in subclasses(AirlockError)
        if c.__module__.startswith("airlock") and c.__module__ != errors.__name__
    )
    assert elsewhere == []
