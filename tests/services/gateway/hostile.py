"""Raw-socket tools for the hostile-input tests: bytes no well-behaved client library would send."""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from pathlib import Path


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_all(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything until the peer closes (or `timeout` passes with the connection still open)."""
    sock.settimeout(timeout)
    chunks = []
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes (one request or several), read until the server closes the connection."""
    with connect(port, timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        return read_all(sock, timeout)


def status_of(response: bytes) -> int:
    """The status code of the first response in `response` (0: none)."""
    if not response.startswith(b"HTTP/1.1 "):
        return 0
    return int(response[9:12])


def statuses(response: bytes) -> list[int]:
    """Every status line in a stream of pipelined responses, in order."""
    return [int(part[:3]) for part in response.split(b"HTTP/1.1 ")[1:] if part[:3].isdigit()]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def request(method: str, target: str, headers: dict[str, str] | list[tuple[str, str]], body: bytes = b"") -> bytes:
    """One HTTP/1.1 request, framed by Content-Length unless the headers frame it otherwise."""
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
    names = {k.lower() for k, _ in pairs}
    if "content-length" not in names and "transfer-encoding" not in names and (body or method == "POST"):
        pairs.append(("content-length", str(len(body))))
    head = f"{method} {target} HTTP/1.1\r\nhost: test\r\n" + "".join(f"{k}: {v}\r\n" for k, v in pairs) + "\r\n"
    return head.encode("latin-1") + body


def wait_closed(socks: list[socket.socket], timeout: float) -> dict[str, int]:
    """Poll until the server has answered-and-closed or closed every socket; counts by outcome."""
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    outcome = {"408": 0, "closed": 0, "other": 0}
    received: dict[socket.socket, bytes] = {}
    deadline = time.monotonic() + timeout
    open_count = len(socks)
    while open_count and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            sock = key.fileobj
            try:
                data = sock.recv(65536)  # type: ignore[union-attr]
            except (BlockingIOError, InterruptedError):
                continue
            except ConnectionResetError:
                data = b""
            if data:
                received[sock] = received.get(sock, b"") + data  # type: ignore[index]
                continue
            got = received.get(sock, b"")  # type: ignore[call-overload]
            outcome["408" if status_of(got) == 408 else "closed" if not got else "other"] += 1
            selector.unregister(sock)
            open_count -= 1
    outcome["still_open"] = open_count
    selector.close()
    return outcome
