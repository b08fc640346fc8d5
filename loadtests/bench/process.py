"""Start a server pinned to one core, wait until it says it is ready, and always stop it.

Readiness is polled with a deadline (never a fixed sleep); a server that dies while starting
fails at once with the tail of its log.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

POLL_S = 0.1


def free_port() -> int:
    """A loopback port nobody listens on now (bind port 0, read it back)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pinned(cmd: Sequence[str], core: int | None) -> list[str]:
    """`cmd` run under `taskset -c core` (unchanged when core is None or taskset is absent)."""
    if core is None or shutil.which("taskset") is None:
        return list(cmd)
    return ["taskset", "-c", str(core), *cmd]


def log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return ""


def wait_ready(url: str, proc: subprocess.Popen, log_path: Path, deadline_s: float) -> None:
    """Poll GET `url` until 200; raise if the process exits or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode} before ready; log:\n{log_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(POLL_S)
    raise TimeoutError(f"{url} not ready within {deadline_s}s; log:\n{log_tail(log_path)}")


def stop(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM, wait for the drain, SIGKILL only if it overstays. Only this PID is touched."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextmanager
def serving(
    cmd: Sequence[str],
    ready_url: str,
    log_path: Path,
    core: int | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    deadline_s: float = 180.0,
) -> Iterator[subprocess.Popen]:
    """Run `cmd` pinned to `core`, stdout+stderr to `log_path`; yield once `ready_url` answers 200."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            pinned(cmd, core),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
    try:
        wait_ready(ready_url, proc, log_path, deadline_s)
        yield proc
    finally:
        stop(proc)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def core_busy_seconds(core: int) -> float:
    """Non-idle CPU time of one core since boot, every process together (from /proc/stat)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in line.split()[1:9])
            return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    raise ValueError(f"no cpu{core} line in /proc/stat")


def wait_for_quiet(cores: Sequence[int], max_busy: float, window_s: float, deadline_s: float) -> float:
    """Wait (bounded) until every core in `cores` was busy at most `max_busy` of a `window_s` window.

    The machine is shared: starting a point while a neighbour's test suite holds the server's
    core measures the neighbour. Returns the busiest core's fraction in the last window (the
    point is still measured when the deadline passes; the caller records the figure).
    """
    deadline = time.monotonic() + deadline_s
    while True:
        before = [core_busy_seconds(c) for c in cores]
        time.sleep(window_s)
        busy = max((core_busy_seconds(c) - b) / window_s for c, b in zip(cores, before, strict=True))
        if busy <= max_busy or time.monotonic() >= deadline:
            return round(busy, 3)
