"""How the ClickHouse backend talks to ClickHouse: a small transport protocol (statements, queries
answered as Arrow or rows, Arrow inserts) with two implementations.

- `HttpTransport` speaks to a server through clickhouse-connect (HTTP).
- `ChdbTransport` runs the real ClickHouse engine in this process (chdb), for the tests and for a
  single-node deployment.

Values never enter SQL text: a statement names them as server-side parameters, `{name:Type}`, and passes
them in `params`. clickhouse-connect sends those as HTTP query parameters; for chdb they are written in
ClickHouse's text form for parameter values by `param_text` (chdb hands them to the engine as strings).

SQL is written against unqualified table names: a transport belongs to one database and runs every
statement there.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import pyarrow as pa

from airlock.errors import StoreError, StoreUnavailable

Params = Mapping[str, Any]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOKEN = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


def valid_identifier(name: str, what: str = "name") -> str:
    """`name` if it is a plain identifier (a database or table name the backend creates), else StoreError."""
    if not _IDENTIFIER.match(name):
        raise StoreError(f"not a valid ClickHouse {what}: {name!r}")
    return name


def quoted(name: str) -> str:
    """An identifier in backticks (span column names hold dots)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


class ClickHouseTransport(Protocol):
    """One database on a ClickHouse engine. Every method raises StoreUnavailable when the engine cannot
    be reached and StoreError when it refuses the statement."""

    database: str

    def command(self, sql: str, params: Params | None = None) -> None:
        """Run a statement that answers nothing (DDL, DELETE, INSERT ... SELECT)."""
        ...

    def query_arrow(self, sql: str, params: Params | None = None) -> pa.Table:
        """A SELECT's answer as an Arrow table, columns in the order selected."""
        ...

    def query_rows(self, sql: str, params: Params | None = None) -> list[dict[str, Any]]:
        """A SELECT's answer as one dict per row, keyed by column name; a Map value is a dict, an Array a list."""
        ...

    def insert_arrow(self, table: str, data: pa.Table, dedup_token: str | None = None) -> None:
        """Insert the rows of `data` (columns by name) into `table`. With a `dedup_token`, a second insert
        under the same token into the same table is dropped by the engine (the table must keep a
        deduplication window), so a retried insert never duplicates rows."""
        ...

    def close(self) -> None:
        """Release the connection; the transport is unusable afterwards."""
        ...


def rows_of(table: pa.Table) -> list[dict[str, Any]]:
    """An Arrow answer as row dicts, maps as dicts (Arrow's Python form of a map is a list of pairs)."""
    maps = [f.name for f in table.schema if pa.types.is_map(f.type)]
    rows = table.to_pylist()
    for row in rows:
        for name in maps:
            pairs = row[name]
            row[name] = dict(pairs) if pairs is not None else None
    return rows


def _quoted_literal(value: Any) -> str:
    """A value inside an array or tuple parameter: strings quoted and escaped."""
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_quoted_literal(v) for v in value) + "]"
    return param_text(value)


def param_text(value: Any) -> str:
    """A parameter value as ClickHouse reads a `{name:Type}` parameter's text: top-level strings in
    escaped (TSV) form, NULL as \\N, arrays as literals of quoted values."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_quoted_literal(v) for v in value) + "]"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    raise StoreError(f"cannot pass a {type(value).__name__} as a ClickHouse parameter")


def settings_clause(dedup_token: str | None) -> str:
    """The SETTINGS of an insert (chdb takes no settings beside the statement). The token is one this
    backend makes from a writer id and a batch number, checked against a strict pattern."""
    if dedup_token is None:
        return ""
    if not _TOKEN.match(dedup_token):
        raise StoreError(f"not a valid deduplication token: {dedup_token!r}")
    return f" SETTINGS insert_deduplication_token = '{dedup_token}'"


def _arrow_stream(data: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, data.schema) as writer:
        writer.write_table(data)
    return bytes(sink.getvalue().to_pybytes())


# -- chdb ----------------------------------------------------------------------------------------


@dataclass
class _ChdbEngine:
    """The process's one chdb session. chdb runs one embedded engine per process, on one folder, and its
    connection takes one statement at a time; every ChdbTransport shares this session under its lock
    (each switches to its own database first)."""

    lock: threading.Lock
    session: Any = None
    path: str | None = None


# The one mutable module global of this backend: chdb's engine exists once per process whatever this
# module does, so its handle is held here, opened on first use and guarded by the lock.
_ENGINE = _ChdbEngine(threading.Lock())


def _chdb_failure(e: Exception, what: str) -> StoreError:
    return StoreError(f"ClickHouse (chdb) {what}: {e}")


class ChdbTransport:
    """A database on the in-process ClickHouse engine (chdb) kept in `path`. Every ChdbTransport of a
    process must name the same path (chdb opens one engine per process); a different one raises
    StoreError. The database is created if missing."""

    def __init__(self, path: str | Path, database: str) -> None:
        self.database = valid_identifier(database, "database name")
        self.path = str(Path(path).resolve())
        self._closed = False
        with _ENGINE.lock:
            if _ENGINE.session is None:
                try:
                    from chdb import session as chdb_session

                    Path(self.path).mkdir(parents=True, exist_ok=True)
                    _ENGINE.session = chdb_session.Session(self.path)
                except (ImportError, RuntimeError, OSError) as e:
                    raise StoreUnavailable(f"ClickHouse (chdb) cannot open {self.path}: {e}") from e
                _ENGINE.path = self.path
            elif _ENGINE.path != self.path:
                raise StoreError(
                    f"chdb runs one engine per process, already open on {_ENGINE.path}; cannot open {self.path}"
                )
            self._run_locked(f"CREATE DATABASE IF NOT EXISTS {quoted(self.database)}", None, "CSV")

    def _run_locked(self, sql: str, params: Params | None, fmt: str) -> Any:
        if self._closed:
            raise StoreError("ClickHouse (chdb) transport is closed")
        try:
            return _ENGINE.session.query(sql, fmt, params={k: param_text(v) for k, v in (params or {}).items()})
        except RuntimeError as e:  # chdb's errors (ChdbError) are RuntimeErrors
            raise _chdb_failure(e, "statement failed") from e

    def _run(self, sql: str, params: Params | None, fmt: str) -> Any:
        with _ENGINE.lock:
            self._run_locked(f"USE {quoted(self.database)}", None, "CSV")
            return self._run_locked(sql, params, fmt)

    def command(self, sql: str, params: Params | None = None) -> None:
        self._run(sql, params, "CSV")

    def query_arrow(self, sql: str, params: Params | None = None) -> pa.Table:
        table = self._run(sql, params, "ArrowTable")
        assert isinstance(table, pa.Table)
        return table

    def query_rows(self, sql: str, params: Params | None = None) -> list[dict[str, Any]]:
        return rows_of(self.query_arrow(sql, params))

    def insert_arrow(self, table: str, data: pa.Table, dedup_token: str | None = None) -> None:
        if data.num_rows == 0:
            return
        columns = ", ".join(quoted(n) for n in data.column_names)
        statement = f"INSERT INTO {quoted(self.database)}.{quoted(valid_identifier(table, 'table name'))}"
        statement += f" ({columns}){settings_clause(dedup_token)}"
        payload = _arrow_stream(data)
        with _ENGINE.lock:
            if self._closed:
                raise StoreError("ClickHouse (chdb) transport is closed")
            try:
                with _ENGINE.session.send_insert(statement, "ArrowStream") as inserter:
                    inserter.append(payload)
                    inserter.finish()
            except RuntimeError as e:
                raise _chdb_failure(e, f"insert into {table} failed") from e

    def close(self) -> None:
        """This transport only: the process's engine stays open for the others (chdb cannot reopen it)."""
        self._closed = True


# -- HTTP ----------------------------------------------------------------------------------------


def shown_url(url: str) -> str:
    """A server URL as messages may show it: any password replaced by ***."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


class HttpTransport:
    """A database on a ClickHouse server, through clickhouse-connect over HTTP(S)."""

    def __init__(
        self,
        url: str,
        database: str,
        user: str | None = None,
        password: str | None = None,
        connect_timeout_s: float = 10.0,
        send_receive_timeout_s: float = 300.0,
    ) -> None:
        self.database = valid_identifier(database, "database name")
        self.url = url
        try:
            import clickhouse_connect
            from clickhouse_connect.driver import exceptions as ch_errors
        except ImportError as e:
            raise StoreUnavailable(f"ClickHouse at {url}: clickhouse-connect is not installed") from e
        self._errors = ch_errors
        try:
            admin = clickhouse_connect.get_client(
                dsn=url,
                username=user,
                password=password or "",
                connect_timeout=connect_timeout_s,
                send_receive_timeout=send_receive_timeout_s,
                # No server session: the gateway's threads share this client, and clickhouse-connect
                # refuses concurrent queries within one session.
                autogenerate_session_id=False,
            )
            admin.command(f"CREATE DATABASE IF NOT EXISTS {quoted(self.database)}")
            admin.close()
            self._client = clickhouse_connect.get_client(
                dsn=url,
                username=user,
                password=password or "",
                database=self.database,
                connect_timeout=connect_timeout_s,
                send_receive_timeout=send_receive_timeout_s,
                # No server session: the gateway's threads share this client, and clickhouse-connect
                # refuses concurrent queries within one session.
                autogenerate_session_id=False,
            )
        except ch_errors.ClickHouseError as e:
            raise self._failure(e, "connect") from e

    def _failure(self, e: Exception, what: str) -> StoreError:
        """The error for a failure, naming the server without its password (the URL may carry one)."""
        text = f"ClickHouse at {shown_url(self.url)}: {what}: {e}"
        secret = urlsplit(self.url).password
        if secret:
            text = text.replace(secret, "***")
        if isinstance(e, self._errors.OperationalError):  # the server cannot be reached
            return StoreUnavailable(text)
        return StoreError(text)

    def command(self, sql: str, params: Params | None = None) -> None:
        try:
            self._client.command(sql, parameters=dict(params or {}))
        except self._errors.ClickHouseError as e:
            raise self._failure(e, "statement failed") from e

    def query_arrow(self, sql: str, params: Params | None = None) -> pa.Table:
        try:
            table = self._client.query_arrow(sql, parameters=dict(params or {}), use_strings=True)
        except self._errors.ClickHouseError as e:
            raise self._failure(e, "query failed") from e
        assert isinstance(table, pa.Table)
        return table

    def query_rows(self, sql: str, params: Params | None = None) -> list[dict[str, Any]]:
        return rows_of(self.query_arrow(sql, params))

    def insert_arrow(self, table: str, data: pa.Table, dedup_token: str | None = None) -> None:
        if data.num_rows == 0:
            return
        if dedup_token is not None and not _TOKEN.match(dedup_token):  # as the chdb transport refuses it
            raise StoreError(f"not a valid deduplication token: {dedup_token!r}")
        settings = {"insert_deduplication_token": dedup_token} if dedup_token is not None else None
        try:
            self._client.insert_arrow(valid_identifier(table, "table name"), data, settings=settings)
        except self._errors.ClickHouseError as e:
            raise self._failure(e, f"insert into {table} failed") from e

    def close(self) -> None:
        self._client.close()


def column_names(transport: ClickHouseTransport, table: str) -> list[str]:
    """The columns of a table of the transport's database, in order."""
    rows = transport.query_rows(
        "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String} ORDER BY position",
        {"db": transport.database, "t": table},
    )
    return [str(r["name"]) for r in rows]


def quoted_list(names: Sequence[str]) -> str:
    return ", ".join(quoted(n) for n in names)
