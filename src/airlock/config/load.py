"""Load and validate airlock.yaml; every error names the key path and the line it is on."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from airlock.config.schema import Config
from airlock.errors import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML allows it; we don't)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice")
        seen.add(key)
    mapping: dict[Any, Any] = loader.construct_mapping(node, deep=deep)
    return mapping


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


def _format(err: ErrorDetails, root: yaml.Node | None) -> str:
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
        config = Config.model_validate(data)
    except ValidationError as e:
        lines = [_format(err, root) for err in e.errors()]
        raise ConfigError(f"{source}: " + "; ".join(lines), errors=lines) from e
    shared = shared_keys(config, root)
    if shared:
        raise ConfigError(f"{source}: " + "; ".join(shared), errors=shared)
    return config


def _line_label(root: yaml.Node | None, loc: tuple[int | str, ...]) -> str:
    line = _line_of(root, loc)
    return f"line {line}" if line else ""


def shared_keys(config: Config, root: yaml.Node | None = None) -> list[str]:
    """One line per api_keys entry that repeats an earlier entry's key (the same key_sha256, or the same
    key_env variable), naming both entries and their lines: a key that two tenants share would leave the
    tenant a caller is billed as to the order of the list."""
    first: dict[tuple[str, str], int] = {}
    out = []
    for i, key in enumerate(config.api_keys):
        field, value = ("key_sha256", key.key_sha256) if key.key_sha256 else ("key_env", key.key_env or "")
        j = first.setdefault((field, value), i)
        if j != i:
            here, there = _line_label(root, ("api_keys", i, field)), _line_label(root, ("api_keys", j, field))
            out.append(
                f"{here + ': ' if here else ''}api_keys.{i}.{field}: tenant {key.tenant!r} has the same key as "
                f"api_keys.{j} (tenant {config.api_keys[j].tenant!r}{', ' + there if there else ''}); "
                "each key must belong to one tenant"
            )
    return out


def environment_problems(config: Config, environ: Mapping[str, str]) -> list[str]:
    """What the environment leaves wrong, one line each: a key_env or api_key_env naming a variable that is
    unset or empty (unless its entry is marked key_optional / api_key_optional), and a key_env whose value
    is the key of another api_keys entry. `config check` warns of these; `serve` refuses to start."""
    out = []
    for i, up in enumerate(config.upstreams):
        if up.api_key_env and not environ.get(up.api_key_env) and not up.api_key_optional:
            out.append(
                f"upstreams.{i}.api_key_env: {up.api_key_env} is not set, so upstream {up.name!r} would be "
                "called with no key (set it, or mark the upstream api_key_optional: true)"
            )
    owner: dict[str, int] = {key.key_sha256: i for i, key in enumerate(config.api_keys) if key.key_sha256}
    for i, key in enumerate(config.api_keys):
        if not key.key_env:
            continue
        secret = environ.get(key.key_env)
        if not secret:
            if not key.key_optional:
                out.append(
                    f"api_keys.{i}.key_env: {key.key_env} is not set, so tenant {key.tenant!r} has no key "
                    "(set it, or mark the entry key_optional: true)"
                )
            continue
        j = owner.setdefault(hashlib.sha256(secret.encode()).hexdigest(), i)
        if j != i:
            out.append(
                f"api_keys.{i}.key_env: the key in {key.key_env} (tenant {key.tenant!r}) is also the key of "
                f"api_keys.{j} (tenant {config.api_keys[j].tenant!r}); each key must belong to one tenant"
            )
    for i, rk in enumerate(config.energy.readings_keys):
        secret = environ.get(rk.key_env) if rk.key_env else None
        if rk.key_env and not secret and not rk.key_optional:
            out.append(
                f"energy.readings_keys.{i}.key_env: {rk.key_env} is not set, so {rk.name!r} cannot push "
                "readings (set it, or mark the entry key_optional: true)"
            )
        digest = rk.key_sha256 or (hashlib.sha256(secret.encode()).hexdigest() if secret else None)
        if digest is not None and digest in owner:
            out.append(
                f"energy.readings_keys.{i}: {rk.name!r} has the key of api_keys.{owner[digest]} (tenant "
                f"{config.api_keys[owner[digest]].tenant!r}); a readings key must be a key of its own"
            )
    out += _store_problems(config, environ)
    return out


def _store_problems(config: Config, environ: Mapping[str, str]) -> list[str]:
    """Server backends whose secret variables are unset, for this node's region."""
    stores = config.store.for_region(config.node.region)
    where = f"store.regions.{config.node.region}" if config.store.regions else "store"
    wanted: list[tuple[str, str | None, str]] = []
    if stores.postgres:
        wanted.append(("postgres.dsn_env", stores.postgres.dsn_env, "PostgreSQL's DSN"))
    if stores.redis:
        wanted.append(("redis.url_env", stores.redis.url_env, "Redis's URL"))
    if stores.clickhouse:
        wanted.append(("clickhouse.url_env", stores.clickhouse.url_env, "ClickHouse's URL"))
    if stores.s3:
        wanted.append(("s3.access_key_env", stores.s3.access_key_env, "the S3 access key"))
        wanted.append(("s3.secret_key_env", stores.s3.secret_key_env, "the S3 secret key"))
    return [
        f"{where}.{key}: {var} is not set, so {what} is unknown"
        for key, var, what in wanted
        if var and not environ.get(var)
    ]


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
