"""A local HTTP(S) proxy sink: LiteLLM's proxy variables point at it, so every outbound attempt is refused and noted."""

from __future__ import annotations

import contextlib
import socketserver
import threading


class EgressSink:
    """A local HTTP(S) proxy that refuses every request and remembers what was asked for."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.connection.settimeout(2)
                with contextlib.suppress(OSError):
                    line = self.rfile.readline(4096).decode(errors="replace").strip()
                    sink.attempts.append(line or "(empty request)")
                    self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def env(self) -> dict[str, str]:
        names = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
        env = {n: self.url for n in names} | {n.lower(): self.url for n in names}
        return env | {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
