"""Names people use for what to filter and group by, resolved to columns of the query copy: a friendly
alias (tenant, model, region, ...), any span column (gen_ai.usage.input_tokens, airlock.node.region),
or any free attribute, with or without its "attributes." prefix (feature, attributes.feature)."""

from __future__ import annotations

from airlock.query.copies import ATTR_PREFIX
from airlock.record.schema import SPAN_SCHEMA

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


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class Fields:
    """Resolves names against the columns the copies actually have."""

    def __init__(self, columns: set[str], has_map: bool) -> None:
        self.columns = columns
        self.has_map = has_map

    def column_of(self, name: str) -> str | None:
        """The copy column a name means, or None for an attribute no span carries as a column."""
        name = ALIASES.get(name, name)
        if name in SPAN_COLUMNS:
            return name
        key = name[len(ATTR_PREFIX) :] if name.startswith(ATTR_PREFIX) else name
        column = ATTR_PREFIX + key
        return column if column in self.columns else None

    def expr(self, name: str) -> str:
        """A SQL expression for the value of `name` on a span (NULL where the span lacks it)."""
        resolved = ALIASES.get(name, name)
        key = resolved[len(ATTR_PREFIX) :] if resolved.startswith(ATTR_PREFIX) else resolved
        column = self.column_of(name)
        if column is not None and column in self.columns:
            direct = q(column)
            if self.has_map and column.startswith(ATTR_PREFIX):  # some segments kept it in the map only
                return f"coalesce({direct}, attributes[{sql_string(key)}])"
            return direct
        if column is not None:  # a span column no segment has yet
            return "NULL"
        if self.has_map:
            return f"attributes[{sql_string(key)}]"
        return "NULL::VARCHAR"

    def is_numeric(self, name: str) -> bool:
        return ALIASES.get(name, name) in NUMERIC_COLUMNS

    def label(self, name: str) -> str:
        return name
