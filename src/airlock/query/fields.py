"""Names people use for what to filter and group by: a friendly alias (tenant, model, region, ...), any
span column (gen_ai.usage.input_tokens, airlock.node.region), or any free attribute, with or without its
"attributes." prefix (feature, attributes.feature). A store resolves them to what it holds."""

from __future__ import annotations

from airlock.record.schema import SPAN_SCHEMA

ATTR_PREFIX = "attributes."  # a free attribute's name as a field: attributes.<key>
ALIASES = {
    "tenant": "airlock.tenant",
    "user": "airlock.user",
    "session": "airlock.session",
    "task": "airlock.task",
    "model": "gen_ai.request.model",
    "served_model": "gen_ai.response.model",
    "operation": "gen_ai.operation.name",
    "upstream": "airlock.upstream",
    "region": "airlock.upstream.region",
    "node": "airlock.node",
    "node_region": "airlock.node.region",
    "route": "airlock.route",
    "prompt": "airlock.prompt.name",
    "prompt_version": "airlock.prompt.version",
    "source": "airlock.source",
    "script": "airlock.script",
}
SPAN_COLUMNS = frozenset(SPAN_SCHEMA.names)
NUMERIC_COLUMNS = frozenset(f.name for f in SPAN_SCHEMA if str(f.type) in ("int64", "int32", "int16", "double", "bool"))


def span_column(name: str) -> str | None:
    """The span column a name means (through its alias), or None when it names a free attribute."""
    resolved = ALIASES.get(name, name)
    return resolved if resolved in SPAN_COLUMNS else None


def attribute_key(name: str) -> str:
    """The free attribute's key a name means (its "attributes." prefix, if any, taken off)."""
    resolved = ALIASES.get(name, name)
    return resolved[len(ATTR_PREFIX) :] if resolved.startswith(ATTR_PREFIX) else resolved


def is_numeric(name: str) -> bool:
    return ALIASES.get(name, name) in NUMERIC_COLUMNS


def field_label(column: str) -> str:
    """How a column reads in a report: a free attribute by its key, a span column by its name."""
    return column[len(ATTR_PREFIX) :] if column.startswith(ATTR_PREFIX) else column
