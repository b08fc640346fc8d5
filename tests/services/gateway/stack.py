"""A small real stack for gateway tests: `meshserve serve` replicas, an endpoints table, the gateway.

Every process is a child on a free loopback port, waited for through its readiness endpoint with
a deadline, and stopped by its PID. Load helpers use aiohttp (bounded in count).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np
import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families

from services.discovery import Endpoint
from services.discovery.static import write_table
from tests.services.modelserver.serverproc import free_port, wait_for

ROOT = Path(__file__).resolve().parents[3]
MODELS = ROOT / "models"
API_KEY = "gw-test-key-1"
LIMITED_KEY = "gw-test-key-limited"
KEY_ENV = {"GW_TEST_KEY": API_KEY, "GW_TEST_LIMITED_KEY": LIMITED_KEY}


def digits_body(rows: int = 1, seed: int = 0) -> bytes:
    """A v2 JSON infer request for digits (pixels / 16 in [0, 1])."""
    pixels = np.random.default_rng(seed).integers(0, 17, size=(rows, 1, 8, 8)).astype(np.float32) / 16
    return orjson.dumps(
        {
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": list(pixels.shape), "data": pixels.ravel().tolist()}
            ]
        }
    )


@dataclass
class Proc:
    """A child process on a port; `stop()` by PID (SIGTERM, then SIGKILL)."""

    proc: subprocess.Popen
    port: int
    log: Path
    grpc_port: int = 0  # model servers started with --grpc-port

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def _spawn(args: list[str], port: int, log: Path, env: dict[str, str] | None = None) -> Proc:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    with log.open("ab") as sink:
        proc = subprocess.Popen(args, cwd=ROOT, env=full_env, stdout=sink, stderr=subprocess.STDOUT)
    return Proc(proc, port, log)


def _wait_ready(proc: Proc, path: str, timeout: float = 60.0) -> None:
    def up() -> bool:
        if proc.proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.proc.returncode}:\n{proc.logs()[-3000:]}")
        return httpx.get(proc.base + path, timeout=5).status_code == 200

    wait_for(up, timeout, f"{proc.base}{path}")


def start_model_server(
    repository: Path, model: str, version: int, log_dir: Path, port: int | None = None, grpc: bool = False
) -> Proc:
    """`meshserve serve --model <model>:<version>` (not yet ready: call `wait_model_server`)."""
    port = port or free_port()
    args = [sys.executable, "-m", "services.cli", "serve", "--repository", str(repository),
            "--model", f"{model}:{version}", "--port", str(port), "--poll-interval", "0"]  # fmt: skip
    grpc_port = free_port() if grpc else 0
    if grpc:
        args += ["--grpc-port", str(grpc_port)]
    proc = _spawn(args, port, log_dir / f"{model}-v{version}-{port}.log")
    proc.grpc_port = grpc_port
    return proc


def wait_model_server(proc: Proc) -> None:
    _wait_ready(proc, "/v2/health/ready")


@dataclass
class Stack:
    """Model servers by service name, the endpoints table, the spec file and the gateway."""

    root: Path
    spec: dict[str, Any]
    servers: dict[str, list[Proc]] = field(default_factory=dict)
    gateway: Proc | None = None
    status_port: int = 0  # the gateway's status listener: /metrics, /healthz, /ready
    grpc: bool = False  # model servers also listen for gRPC (published as endpoint meta grpc_port)

    @property
    def status(self) -> str:
        return f"http://127.0.0.1:{self.status_port}"

    @property
    def spec_path(self) -> Path:
        return self.root / "mesh.yaml"

    @property
    def endpoints_path(self) -> Path:
        return self.root / "endpoints.json"

    @property
    def url(self) -> str:
        assert self.gateway is not None
        return self.gateway.base

    def write_spec(self, spec: dict[str, Any] | None = None) -> None:
        """Replace mesh.yaml atomically (write + rename), as `meshserve canary` does."""
        if spec is not None:
            self.spec = spec
        tmp = self.spec_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(self.spec, sort_keys=False))
        os.replace(tmp, self.spec_path)

    def write_endpoints(self, extra: dict[str, list[tuple[str, int]]] | None = None) -> None:
        table = {
            service: [
                Endpoint(
                    service,
                    f"{service}-{i}",
                    "127.0.0.1",
                    p.port,
                    {"grpc_port": str(p.grpc_port)} if p.grpc_port else {},
                )
                for i, p in enumerate(procs)
            ]
            for service, procs in self.servers.items()
        }
        for service, entries in (extra or {}).items():
            table[service] = [Endpoint(service, name, "127.0.0.1", port) for name, port in entries]
        write_table(self.endpoints_path, table)

    def start_servers(self, repository: Path, replicas: dict[tuple[str, int], int]) -> None:
        """Start every replica at once, then wait for all (startup dominates test time)."""
        started = []
        for (model, version), count in replicas.items():
            for _ in range(count):
                proc = start_model_server(repository, model, version, self.root, grpc=self.grpc)
                self.servers.setdefault(f"{model}-v{version}", []).append(proc)
                started.append(proc)
        for proc in started:
            wait_model_server(proc)

    def start_gateway(
        self,
        extra: dict[str, list[tuple[str, int]]] | None = None,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        """`python -m services.gateway` on free ports (public + status), with `args` added to its command line."""
        self.write_endpoints(extra)
        self.write_spec()
        port, self.status_port = free_port(), free_port()
        env = {**KEY_ENV, "MESHSERVE_DISCOVERY": f"static:{self.endpoints_path}", **(env or {})}
        args = [sys.executable, "-m", "services.gateway", "--spec", str(self.spec_path), "--port", str(port),
                "--status-port", str(self.status_port), *args]  # fmt: skip
        self.gateway = _spawn(args, port, self.root / f"gateway-{port}.log", env)
        status = Proc(self.gateway.proc, self.status_port, self.gateway.log)
        _wait_ready(status, "/ready", 30)

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        for procs in self.servers.values():
            for proc in procs:
                proc.stop()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the gateway's samples called `name` whose labels include `labels`."""
        text = httpx.get(self.status + "/metrics", timeout=5).text
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )


def base_spec(repository: Path, **digits: Any) -> dict[str, Any]:
    """A spec with the digits model (v1, v2), a demo consumer and a rate-limited one."""
    model = {
        "versions": {1: {"replicas": 1}, 2: {"replicas": 1}},
        "traffic": {"weights": {1: 90, 2: 10}, "header": "x-model-version"},
        "resilience": {
            "timeout": "2s",
            "retries": {
                "attempts": 2, "per_try_timeout": "1s", "retry_on": ["connect-failure", "refused-stream", "5xx"],
            },
            "outlier_detection": {
                "consecutive_5xx_errors": 3, "interval": "1s", "base_ejection_time": "1s", "max_ejection_percent": 50,
            },
            "connection_pool": {"max_connections": 64, "max_pending_requests": 256},
        },
    }  # fmt: skip
    model.update(digits)
    return {
        "name": "gwtest",
        "repository": str(repository),
        "models": {"digits": model},
        "gateway": {
            "port": 8080,
            "key_names": ["apikey", "x-api-key"],
            "rate_limit": {"second": 100000},
            "consumers": [
                {"username": "demo", "api_key": {"env": "GW_TEST_KEY"}},
                {"username": "limited", "api_key": {"env": "GW_TEST_LIMITED_KEY"}, "rate_limit": {"hour": 5}},
            ],
        },
    }


def repository_with(tmp: Path, versions: dict[int, Path], config_overrides: dict[str, Any] | None = None) -> Path:
    """A model repository `digits` whose versions are the given model.onnx files."""
    repo = tmp / "models"
    target = repo / "digits"
    target.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((MODELS / "digits" / "config.yaml").read_text())
    config.update(config_overrides or {})
    (target / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copy(MODELS / "digits" / "labels.txt", target / "labels.txt")
    for version, onnx in versions.items():
        (target / str(version)).mkdir(exist_ok=True)
        shutil.copy(onnx, target / str(version) / "model.onnx")
    return repo


@contextlib.contextmanager
def running(stack: Stack) -> Iterator[Stack]:
    try:
        yield stack
    finally:
        stack.stop()


# ------------------------------------------------------------------ load


@dataclass
class Result:
    """One request's outcome (no latency: speed belongs in loadtests/bench, not in test assertions)."""

    status: int
    version: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


async def fire(
    url: str,
    count: int,
    concurrency: int,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    keep: bool = False,
) -> list[Result]:
    """`count` POSTs with `concurrency` workers; every outcome recorded (a transport error is status 0)."""
    body = digits_body() if body is None else body
    sent = {"apikey": API_KEY, **(headers or {})}
    results: list[Result] = []
    remaining = [count]
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def worker() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                try:
                    async with session.post(url, data=body, headers=sent) as resp:
                        data = await resp.read()
                        results.append(
                            Result(
                                resp.status,
                                resp.headers.get("x-model-version", ""),
                                data if keep else b"",
                                dict(resp.headers) if keep else {},
                            )
                        )
                except aiohttp.ClientError:
                    results.append(Result(0, ""))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


class Background:
    """Steady load in a thread until stopped (bounded by `limit` requests); every result kept."""

    def __init__(self, url: str, concurrency: int = 4, limit: int = 20000, headers: dict[str, str] | None = None):
        self.url, self.concurrency, self.limit, self.headers = url, concurrency, limit, headers or {}
        self.results: list[Result] = []
        self._stop = False
        self._thread: Any = None

    def __enter__(self) -> Background:
        import threading

        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        wait_for(lambda: len(self.results) >= 20, 20, "background load to start")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop = True
        self._thread.join(30)

    async def _run(self) -> None:
        body = digits_body()
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def worker() -> None:
                while not self._stop and len(self.results) < self.limit:
                    try:
                        async with session.post(self.url, data=body, headers={"apikey": API_KEY, **self.headers}) as r:
                            await r.read()
                            self.results.append(Result(r.status, r.headers.get("x-model-version", "")))
                    except aiohttp.ClientError:
                        self.results.append(Result(0, ""))

            await asyncio.gather(*(worker() for _ in range(self.concurrency)))

    def failures(self) -> list[Result]:
        return [r for r in self.results if r.status != 200]


def start_echo(
    log_dir: Path, name: str, port: int | None = None, status: int = 0, env: dict[str, str] | None = None
) -> Proc:
    """tests/services/gateway/echo_app.py under uvicorn, ready (`status`: answer only that)."""
    port = port or free_port()
    args = [sys.executable, "-m", "uvicorn", "tests.services.gateway.echo_app:app", "--port", str(port),
            "--log-level", "warning", "--no-access-log"]  # fmt: skip
    env = {"ECHO_NAME": name, "ECHO_STATUS": str(status), **(env or {})}
    proc = _spawn(args, port, log_dir / f"echo-{name}-{port}.log", env)
    wait_for(lambda: httpx.get(proc.base + "/echo", timeout=5).status_code, 30, f"{proc.base}/echo")
    return proc
