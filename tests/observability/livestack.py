"""Shared helpers for tests that run the real local stack with its Prometheus (one per test module).

`observed_stack(run_dir, spec)` starts the supervisor's LocalStack with the observability hook's
Prometheus (1 s scrape) and file tracing; `query` asks Prometheus' HTTP API; `until` polls with a
deadline; `drive` sends a bounded number of real requests through the gateway.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from loadtests import payloads
from observability.prometheus import find_binary
from services.local.observers import prometheus_processes
from services.local.supervisor import LocalStack, free_port

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
# Example values for the dashboards' template variables, as Grafana would fill them in.
VARIABLES = {
    "model": "digits",
    "version": "1|2",
    "stable": "1",
    "canary": "2",
    "route": ".*",
    "namespace": "meshserve",
    "edge_namespace": "kong",
}

needs_prometheus = pytest.mark.skipif(
    find_binary() is None, reason="Debian's prometheus is not installed (make system-deps installs it)"
)


@contextmanager
def observed_stack(
    run_dir: Path,
    spec_path: Path,
    env: dict[str, str] | None = None,
    *,
    prometheus: bool = True,
    extra: Sequence[Callable[[LocalStack], list]] = (),
) -> Iterator[LocalStack]:
    """The real stack + Prometheus scraping it every second + spans appended to run_dir/spans.jsonl;
    `extra` hooks add processes as `up`'s hooks do (services/local/observers.py) (e.g. the console)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    stack = LocalStack(
        spec_path,
        run_dir=run_dir,
        gateway_port=free_port(),
        env={
            "MESHSERVE_API_KEY": "test-key-observability",
            "MESHSERVE_SCRAPE_INTERVAL": "1s",
            "MESHSERVE_TRACES_FILE": str(run_dir / "spans.jsonl"),
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            **(env or {}),
        },
        ready_timeout=90,
        grace=5,
    )
    if prometheus:
        stack.add_processes(prometheus_processes(stack))
    for hook in extra:
        stack.add_processes(hook(stack))
    with stack:
        yield stack


def prometheus_url(stack: LocalStack) -> str:
    return stack.url("prometheus")


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    reply = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = reply.json()
    assert reply.status_code == 200 and body["status"] == "success", f"{expr}\n-> {body}"
    return body["data"]["result"]


def until(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll `probe` until it returns something truthy, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def headers(stack: LocalStack, **extra: str) -> dict[str, str]:
    return {"x-api-key": stack.env["MESHSERVE_API_KEY"], **extra}


def classify(client: httpx.Client, stack: LocalStack, i: int = 0, **extra: str) -> httpx.Response:
    bodies = payloads.png_bodies()
    route = next(iter(stack.spec.pipelines.values())).route
    return client.post(
        stack.url("gateway") + route,
        content=bodies[i % len(bodies)],
        headers=headers(stack, **{"content-type": "image/png", **extra}),
    )


def infer(client: httpx.Client, stack: LocalStack, i: int = 0, model: str = "digits", **extra: str) -> httpx.Response:
    bodies = payloads.infer_json_bodies()
    return client.post(
        f"{stack.url('gateway')}/v2/models/{model}/infer",
        content=bodies[i % len(bodies)],
        headers=headers(stack, **{"content-type": "application/json", **extra}),
    )


class Driver:
    """Background traffic through the gateway: at most `rate` requests/s, at most `limit` in all."""

    def __init__(self, stack: LocalStack, send: Callable[..., httpx.Response], rate: float, limit: int) -> None:
        self.stack, self.send, self.rate, self.limit = stack, send, rate, limit
        self.codes: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            for i in range(self.limit):
                if self._stop.wait(1 / self.rate):
                    return
                try:
                    code = self.send(client, self.stack, i).status_code
                except httpx.HTTPError:
                    code = 0
                self.codes[code] = self.codes.get(code, 0) + 1

    def __enter__(self) -> Driver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def copy_spec(tmp: Path, *, repository: Path | None = None) -> Path:
    """mesh.yaml copied into `tmp` (comments kept), its repository pointing at the real or given one."""
    from mesh.canary import dump
    from mesh.spec import read_yaml

    doc = read_yaml(REPO / "mesh" / "mesh.yaml")
    doc["repository"] = str(repository or (REPO / "models"))
    path = tmp / "mesh.yaml"
    path.write_text(dump(doc))
    return path


def copy_repository(tmp: Path, extra_versions: dict[int, Path] | None = None) -> Path:
    """A temp model repository with digits (config, labels, v1, v2) and extra versions from files."""
    repo = tmp / "models"
    shutil.copytree(REPO / "models" / "digits", repo / "digits", ignore=shutil.ignore_patterns("*.tmp"))
    for version, onnx in (extra_versions or {}).items():
        (repo / "digits" / str(version)).mkdir(parents=True, exist_ok=True)
        shutil.copy(onnx, repo / "digits" / str(version) / "model.onnx")
    return repo
