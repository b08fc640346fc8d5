"""Is a loopback port free, and if not, who holds it: checked before `meshserve up` starts anything.

Without the check a taken gateway port looked ready (another process answered the health URL) while
the stack's own gateway crash-looped on "address already in use". The holder comes from psutil
(the socket table joined with /proc/<pid>/fd); another user's process shows without a name.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Iterable

import psutil


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Binding works the way uvicorn binds (SO_REUSEADDR: a port in TIME_WAIT counts as free)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def holder(port: int) -> str | None:
    """'pid 1234 (python -m services.gateway ...)' for the process listening on `port`, when visible."""
    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return None
    for conn in connections:
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port:
            continue
        if conn.pid is None:
            return "a process of another user"
        with contextlib.suppress(psutil.Error):
            command = " ".join(psutil.Process(conn.pid).cmdline()) or psutil.Process(conn.pid).name()
            return f"pid {conn.pid} ({command[:120]})"
        return f"pid {conn.pid}"
    return None


def taken(ports: Iterable[tuple[str, int]]) -> list[str]:
    """For each (owner, port) that cannot be bound: 'port N (owner) is in use by ...'."""
    problems = []
    for owner, port in ports:
        if not port_free(port):
            who = holder(port)
            problems.append(f"port {port} ({owner}) is already in use" + (f" by {who}" if who else ""))
    return problems
