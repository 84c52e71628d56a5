"""Numbered migrations of the ClickHouse schema: migrations/NNNN_<what>.sql, applied in number order,
each recorded in `schema_migrations` once its statements ran. A file holds statements separated by a
`;` at the end of a line. Statements are written to be re-runnable (IF NOT EXISTS), so two gateways
migrating one database at once end in the same schema (the table may then record a version twice;
readers take the distinct versions).

A new span column in record/schema.py needs one new file with one line; schema.missing_column_sql
prints it, and the schema test fails until it exists.

Retention is a setting, not a migration: `set_retention` puts a TTL of N days (or none) on spans and
hops, by their start time."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from airlock.errors import StoreError
from airlock.store.clickhouse.schema import HOPS, SPANS
from airlock.store.clickhouse.transport import ClickHouseTransport

_FILE = re.compile(r"^(?P<number>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
MIGRATIONS_TABLE = "schema_migrations"


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    statements: tuple[str, ...]


def statements_of(text: str) -> list[str]:
    """The statements of a migration file: split at a `;` ending a line; chunks of only comments dropped."""
    out = []
    for chunk in re.split(r";[ \t]*(?:\n|$)", text):
        meaningful = [ln for ln in chunk.splitlines() if ln.strip() and not ln.strip().startswith("--")]
        if meaningful:
            out.append(chunk.strip())
    return out


def migrations() -> list[Migration]:
    """Every migration shipped with the package, in number order (StoreError on a duplicate number)."""
    folder = resources.files("airlock.store.clickhouse") / "migrations"
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        m = _FILE.match(entry.name)
        if m is None:
            continue
        number = int(m["number"])
        if number in found:
            raise StoreError(f"two ClickHouse migrations numbered {number}")
        found[number] = Migration(number, m["name"], tuple(statements_of(entry.read_text(encoding="utf-8"))))
    return [found[n] for n in sorted(found)]


def applied_versions(transport: ClickHouseTransport) -> set[int]:
    transport.command(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (version UInt32, name String,"
        " applied_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY version"
    )
    rows = transport.query_rows(f"SELECT DISTINCT version FROM {MIGRATIONS_TABLE}")
    return {int(r["version"]) for r in rows}


def apply_migrations(transport: ClickHouseTransport) -> list[int]:
    """Run every migration not yet recorded, in order; returns the numbers applied now."""
    done = applied_versions(transport)
    applied = []
    for migration in migrations():
        if migration.number in done:
            continue
        for statement in migration.statements:
            transport.command(statement)
        transport.command(
            f"INSERT INTO {MIGRATIONS_TABLE} (version, name) VALUES ({{v:UInt32}}, {{n:String}})",
            {"v": migration.number, "n": migration.name},
        )
        applied.append(migration.number)
    return applied


def schema_version(transport: ClickHouseTransport) -> int:
    """The highest migration applied (0 for a fresh database)."""
    return max(applied_versions(transport), default=0)


def set_retention(transport: ClickHouseTransport, days: int | None) -> None:
    """Keep spans and hops `days` days after their start (ClickHouse drops them as it merges), or for
    ever with None. The blob index is kept: later spans may name a payload stored long before."""
    if days is not None and (not isinstance(days, int) or isinstance(days, bool) or days < 1):
        raise StoreError(f"retention must be a whole number of days, at least 1: {days!r}")
    for table in (SPANS, HOPS):
        if days is None:
            has_ttl = transport.query_rows(
                "SELECT position(create_table_query, ' TTL ') > 0 AS has FROM system.tables"
                " WHERE database = {db:String} AND name = {t:String}",
                {"db": transport.database, "t": table},
            )
            if has_ttl and has_ttl[0]["has"]:
                transport.command(f"ALTER TABLE {table} REMOVE TTL")
        else:  # DDL takes no query parameters; `days` is checked to be a positive int above
            transport.command(
                f"ALTER TABLE {table} MODIFY TTL toDateTime(fromUnixTimestamp64Nano(start_ns, 'UTC'))"
                f" + toIntervalDay({int(days)})"
            )
