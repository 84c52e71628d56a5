"""What the S3 tests share: a TCP forwarder that can play a dead endpoint, and a BlobLocator over
index rows kept in a dict."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Sequence
from typing import Any

from airlock.store.embedded.blobs import valid_prefix


class Forwarder:
    """TCP on 127.0.0.1 to a target address; while `down`, every connection (open or new) is reset."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._down = False
        self._closed = threading.Event()
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_down(self, down: bool) -> None:
        with self._lock:
            self._down = down
            if down:
                for s in self._open:
                    _reset(s)
                self._open = []

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                if self._down:
                    _reset(conn)
                    continue
                upstream = socket.create_connection(self.target)
                self._open += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self._listener.close()
        self.set_down(True)


def _reset(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


class RowsLocator:
    """A BlobLocator over index rows kept in a dict (what a writer handed out)."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[Any, ...]] = {}

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        for row in rows:
            self.rows[str(row[0])] = tuple(row)

    def locate(self, digests: list[str]) -> dict[str, tuple[Any, ...]]:
        return {d: self.rows[d] for d in digests if d in self.rows}

    def resolve(self, prefix: str) -> str:
        prefix = valid_prefix(prefix)
        found = [d for d in self.rows if d.startswith(prefix)]
        if len(found) != 1:
            raise KeyError(f"{len(found)} blobs match {prefix!r}")
        return found[0]
