"""Load and validate airlock.yaml; every error names the key path and the line it is on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from airlock.config.schema import Config
from airlock.errors import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML allows it; we don't)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the deepest node the error location reaches."""
    node, line = root, (root.start_mark.line + 1 if root else None)
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == part:
                    line = k.start_mark.line + 1
                    node = v
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _format(err: dict[str, Any], root: yaml.Node | None) -> str:
    loc = tuple(p for p in err["loc"] if p not in ("function-after",))
    path = ".".join(str(p) for p in loc) or "(top level)"
    line = _line_of(root, loc)
    where = f"line {line}: " if line else ""
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    return f"{where}{path}: {msg}"


def parse_config(text: str, source: str = "airlock.yaml") -> Config:
    try:
        root = yaml.compose(text, Loader=_UniqueKeyLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        line = f"line {mark.line + 1}: " if mark else ""
        raise ConfigError(f"{source}: {line}not valid YAML: {e.problem}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the file must be a mapping of keys (data_dir, upstreams, ...)")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        lines = [_format(err, root) for err in e.errors()]
        raise ConfigError(f"{source}: " + "; ".join(lines), errors=lines) from e


def load_config(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from e
    config = parse_config(text, source=str(p))
    if not Path(config.data_dir).is_absolute():
        # A relative data_dir is relative to the config file, not to wherever the command runs.
        config = config.model_copy(update={"data_dir": str((p.parent / config.data_dir).resolve())})
    return config
