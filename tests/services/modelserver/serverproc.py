"""Start `meshserve serve` as a real process on loopback, wait for it with a deadline, read its metrics."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> object:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            value = predicate()
            if value:
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log: Path
    grpc_port: int = 0

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.base + path, timeout=10)

    def post(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.post(self.base + path, timeout=10, **kwargs)

    def samples(self) -> list:
        text = self.get("/metrics").text
        return [s for family in text_string_to_metric_families(text) for s in family.samples]

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples called `name` whose labels include `labels` (0 if none)."""
        return sum(
            s.value for s in self.samples() if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def run_server(repository: Path, *args: str, log_dir: Path, ready: bool = True, grpc: bool = False) -> Iterator[Server]:
    """The server as a child process; always torn down (SIGTERM, then SIGKILL) by its PID.
    With `grpc`, it also listens for v2 gRPC on a free port (Server.grpc_port)."""
    port = free_port()
    grpc_port = free_port() if grpc else 0
    if grpc:
        args = (*args, "--grpc-port", str(grpc_port))
    log = log_dir / f"server-{port}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", "--repository", str(repository),
             "--port", str(port), *args],
            cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = Server(proc, port, log, grpc_port)
    try:
        path = "/v2/health/ready" if ready else "/v2/health/live"

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{server.logs()}")
            return server.get(path).status_code == 200 and (not grpc or _accepts(grpc_port))

        wait_for(up, 60, f"server {path}")
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
