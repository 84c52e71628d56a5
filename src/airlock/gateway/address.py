"""One `airlock serve` per address. The workers of one serve share its port with SO_REUSEPORT, which the
kernel grants to any process of the same user, so a second serve on that port would start and take a
share of the connections into another data directory. Before any worker starts, `claim_address` takes
a lock named after host:port (an abstract Unix socket, which the kernel releases when the process dies)
and probes the port without SO_REUSEPORT, which fails while anything listens there."""

from __future__ import annotations

import errno
import socket
import struct
import sys

from airlock.errors import AddressInUse


def _lock_name(host: str, port: int) -> str:
    return f"\0airlock-serve:{host}:{port}"


def _holder_pid(name: str) -> int | None:
    """The pid of the process listening on the lock socket `name`, from the kernel's peer credentials."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(name)
            creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return None
    pid, _uid, _gid = struct.unpack("3i", creds)
    return int(pid)


def _take_lock(host: str, port: int) -> socket.socket | None:
    """The lock socket for host:port, held until closed; None where the system has no abstract sockets."""
    if not sys.platform.startswith("linux"):
        return None
    name = _lock_name(host, port)
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lock.bind(name)
    except OSError as e:
        lock.close()
        if e.errno != errno.EADDRINUSE:
            raise
        pid = _holder_pid(name)
        holder = f"another airlock serve (pid {pid})" if pid else "another airlock serve"
        raise AddressInUse(
            f"{host}:{port} is already served by {holder}; a second gateway there would take part of its "
            "traffic into another data directory",
            host=host,
            port=port,
        ) from None
    lock.listen(1)  # so that a refused serve can ask the kernel who holds it
    return lock


def _probe(host: str, port: int) -> None:
    """Bind host:port without SO_REUSEPORT (with SO_REUSEADDR, as the workers do), then let it go."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as e:
        raise AddressInUse(f"cannot listen on {host}:{port}: {e.strerror or e}", host=host, port=port) from None


class AddressClaim:
    """This process's claim on host:port for one `airlock serve`; the workers it starts may listen there."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._lock = _take_lock(host, port)
        try:
            _probe(host, port)
        except AddressInUse:
            self.release()
            raise

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def claim_address(host: str, port: int) -> AddressClaim:
    """Claim host:port for this serve. Raises AddressInUse naming the address when another `airlock serve`
    holds it, or when anything already listens there."""
    return AddressClaim(host, port)
