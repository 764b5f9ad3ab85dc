"""``flaregate serve --workers N``: N server processes sharing one port (SO_REUSEPORT).

Each worker is a full server over the same backend; the kernel spreads connections over
them. Only Redis keeps them one gateway (limits, cache): over SQLite each process would
count its own limits, so the command refuses and says so.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from types import FrameType

REFUSAL = ("flaregate: --workers N > 1 needs FLAREGATE_REDIS_URL: over the embedded SQLite each process "
           "would count its own rate limits. Start a Redis and set FLAREGATE_REDIS_URL=redis://HOST:6379/0.")


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket other workers can bind too; the kernel balances between them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def supervise(argv: list[str], workers: int) -> int:
    """Run ``workers`` copies of ``flaregate serve`` (argv without --workers) and wait; a
    SIGTERM or SIGINT is passed on to each."""
    children = [subprocess.Popen([sys.executable, "-m", "flaregate", *argv, "--reuse-port"])
                for _ in range(workers)]

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return max(codes, default=0)
