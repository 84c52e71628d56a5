"""Run a command with the loopback interface up, for use inside `unshare -rn` (a network namespace
whose only interface is loopback): any attempt to reach another address fails at once, so a test
suite run this way proves that nothing in it, nor in the product, needs the network.

    unshare -rn python tests/offline.py python -m pytest
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import sys

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, request)[:18])[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


if __name__ == "__main__":
    loopback_up()
    os.environ["AIRLOCK_TEST_OFFLINE"] = "1"
    os.execvp(sys.argv[1], sys.argv[1:])
