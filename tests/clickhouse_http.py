"""A ClickHouse server for tests, on 127.0.0.1: ClickHouse's own engine (chdb) behind the part of the
HTTP interface that clickhouse-connect speaks (queries in the body or the `query` parameter, `database`,
`default_format`, `param_<name>` values, inserts with their data in the body, errors as ClickHouse
words them). So several gateway processes can share one real ClickHouse engine, as replicas share a
server, where no ClickHouse server can be installed: chdb opens one engine per process.

    python tests/clickhouse_http.py PORT DIR      # serve until killed
"""

from __future__ import annotations

import re
import sys
import tempfile
import threading
from email.parser import BytesParser
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+(?P<target>.+?)\s+FORMAT\s+(?P<fmt>\w+)\s*$", re.I | re.S)
# URL parameters that are not query settings.
_NOT_SETTINGS = {"query", "database", "default_format", "query_id", "session_id", "session_timeout", "user", "password",
                 "compress", "decompress", "wait_end_of_query", "send_progress_in_http_headers",
                 "http_headers_progress_interval_ms", "enable_http_compression", "session_check"}  # fmt: skip


_MAX_URI = 1 << 20


class Engine:
    """The process's one chdb session, one statement at a time."""

    def __init__(self, folder: Path) -> None:
        from chdb import session

        self.session = session.Session(str(folder))
        self.lock = threading.Lock()
        self.spool = Path(tempfile.mkdtemp(prefix="ch-http-"))

    def run(self, sql: str, database: str, fmt: str, params: dict[str, str], data: bytes | None) -> bytes:
        with self.lock:
            self.session.query(f"USE `{database}`")
            if data is not None:
                m = _INSERT.match(sql)
                if m is None:
                    raise ValueError(f"Code: 62. DB::Exception: cannot take data for this statement: {sql[:80]}")
                path = self.spool / "insert.bin"
                path.write_bytes(data)
                settings = sql_settings(params)
                sql = f"INSERT INTO {m['target']} SELECT * FROM file('{path}', '{m['fmt']}'){settings}"
                self.session.query(sql, "TabSeparated")
                return b""
            result = self.session.query(sql, fmt, params=query_params(params))
            return bytes(result.bytes())


def query_params(params: dict[str, str]) -> dict[str, str]:
    return {k[len("param_") :]: v for k, v in params.items() if k.startswith("param_")}


def sql_settings(params: dict[str, str]) -> str:
    chosen = {k: v for k, v in params.items() if k not in _NOT_SETTINGS and not k.startswith("param_")}
    wanted = {k: v for k, v in chosen.items() if k in ("insert_deduplication_token", "insert_deduplicate")}
    if not wanted:
        return ""
    quoted = ", ".join(f"{k} = '{v.replace(chr(39), '')}'" for k, v in wanted.items())
    return f" SETTINGS {quoted}"


def handler_for(engine: Engine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def handle_one_request(self) -> None:
            """As the base class does, but with ClickHouse's own limit on the request line (1 MiB, its
            http_max_uri_size) instead of 64 KiB: clickhouse-connect sends long parameters in the URL."""
            self.raw_requestline = self.rfile.readline(_MAX_URI + 1)
            if len(self.raw_requestline) > _MAX_URI:
                self.send_error(414)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            method = getattr(self, "do_" + self.command, None)
            if method is None:
                self.send_error(501)
                return
            method()
            self.wfile.flush()

        def _answer(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-ClickHouse-Timezone", "UTC")
            self.send_header("X-ClickHouse-Server-Display-Name", "airlock-test-chdb")
            self.send_header("X-ClickHouse-Summary", '{"read_rows":"0","written_rows":"0"}')
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path in ("/ping", "/") and "query" not in dict(parse_qsl(parts.query)):
                self._answer(200, b"Ok.\n")
                return
            self._serve(b"")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self._serve(self.rfile.read(length) if length else b"")

        def _serve(self, body: bytes) -> None:
            params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
            kind = self.headers.get("Content-Type", "")
            if kind.startswith("multipart/form-data"):  # long parameters travel as form fields
                form = BytesParser(policy=default_policy).parsebytes(
                    b"Content-Type: " + kind.encode() + b"\r\n\r\n" + body
                )
                body = b""
                for part in form.iter_parts():
                    name = part.get_param("name", header="content-disposition")
                    value = part.get_payload(decode=True) or b""
                    if name:
                        params[str(name)] = value.decode()
            database = params.get("database") or "default"
            fmt = params.get("default_format") or "TabSeparated"
            if "query" in params:
                sql, data = params["query"], (body if body else None)
                if data is not None and not _INSERT.match(sql):
                    sql, data = sql + " " + body.decode(), None
            else:
                sql, data = body.decode(), None
            try:
                out = engine.run(sql, database, fmt, params, data)
            except Exception as e:  # the engine's refusal, worded as ClickHouse words it
                text = str(e)
                code = re.search(r"Code: (\d+)", text)
                self._answer(500, text.encode(), {"X-ClickHouse-Exception-Code": code[1] if code else "1"})
                return
            self._answer(200, out, {"X-ClickHouse-Format": fmt})

    return Handler


def serve(port: int, folder: Path) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), handler_for(Engine(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


if __name__ == "__main__":
    srv = serve(int(sys.argv[1]), Path(sys.argv[2]))
    print(f"clickhouse-http on 127.0.0.1:{srv.server_address[1]}", flush=True)
    threading.Event().wait()
