"""An in-process fake of the few Consul agent HTTP endpoints the Consul backend uses (no Consul agent can run here).

Like the agent, it runs each registered HTTP check against the instance (critical until it answers 2xx),
answers /v1/health/service/<name> with `?passing` filtering and blocking `?index=&wait=` queries, and
bumps X-Consul-Index on every change. Every health query is recorded (its `index` and `wait`, and how
it ended), and `parked` counts the blocking queries waiting right now, so tests can tell a blocking
watch from polling by what the agent saw rather than by time.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mesh.spec import parse_duration


@dataclass
class HealthQuery:
    """One /v1/health/service query as the agent saw it."""

    service: str
    index: str | None
    wait: str | None
    passing: bool
    answered_index: int = 0  # the X-Consul-Index it answered with (0 while it waits)
    ended: str = ""  # "now" (no or an old index), "changed" (woken by a change), "waited" (wait ran out)


@dataclass
class FakeConsulState:
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    index: int = 1
    queries: list[HealthQuery] = field(default_factory=list)
    parked: int = 0
    changed: asyncio.Condition | None = None

    async def bump(self) -> None:
        self.index += 1
        assert self.changed is not None
        async with self.changed:
            self.changed.notify_all()


def fake_consul_app(state: FakeConsulState) -> Starlette:
    async def register(request: Request) -> Response:
        body = {k.lower(): v for k, v in (await request.json()).items()}
        service_id = body.get("id") or body["name"]
        state.services[service_id] = body
        state.status[service_id] = "critical"  # the agent's initial status for a new HTTP check
        await state.bump()
        return Response(b"")

    async def deregister(request: Request) -> Response:
        service_id = request.path_params["service_id"]
        if state.services.pop(service_id, None) is None:
            return Response(f"Unknown service ID {service_id!r}", status_code=404)
        state.status.pop(service_id, None)
        await state.bump()
        return Response(b"")

    async def health(request: Request) -> Response:
        name = request.path_params["name"]
        params = request.query_params
        index = params.get("index")
        query = HealthQuery(name, index, params.get("wait"), "passing" in params, ended="now")
        state.queries.append(query)
        if index is not None and int(index) >= state.index:
            wait = parse_duration(params.get("wait", "5m"))
            assert state.changed is not None
            state.parked += 1
            try:
                async with state.changed:
                    await asyncio.wait_for(state.changed.wait_for(lambda: state.index > int(index)), wait)
                query.ended = "changed"
            except TimeoutError:
                query.ended = "waited"
            finally:
                state.parked -= 1
        query.answered_index = state.index
        passing_only = query.passing
        entries = [
            {
                "Node": {"Node": "fake-agent", "Address": "127.0.0.1"},
                "Service": {
                    "ID": sid,
                    "Service": svc["name"],
                    "Address": svc.get("address", ""),
                    "Port": svc.get("port", 0),
                    "Meta": svc.get("meta") or {},
                    "Tags": svc.get("tags") or [],
                },
                "Checks": [{"CheckID": f"service:{sid}", "Status": state.status[sid]}],
            }
            for sid, svc in state.services.items()
            if svc["name"] == name and (not passing_only or state.status[sid] == "passing")
        ]
        return JSONResponse(entries, headers={"X-Consul-Index": str(state.index)})

    async def run_checks() -> None:
        async with httpx.AsyncClient(timeout=1.0) as client:
            while True:
                for sid, svc in list(state.services.items()):
                    check = next((c for c in svc.get("checks") or [] if "http" in c), None)
                    if check is None:
                        continue
                    try:
                        ok = (await client.get(check["http"])).is_success
                    except httpx.HTTPError:
                        ok = False
                    new = "passing" if ok else "critical"
                    if sid in state.status and state.status[sid] != new:
                        state.status[sid] = new
                        await state.bump()
                await asyncio.sleep(0.1)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette):
        state.changed = asyncio.Condition()
        task = asyncio.create_task(run_checks())
        yield
        task.cancel()

    return Starlette(
        routes=[
            Route("/v1/agent/service/register", register, methods=["PUT"]),
            Route("/v1/agent/service/deregister/{service_id}", deregister, methods=["PUT"]),
            Route("/v1/health/service/{name}", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


@contextlib.contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port in a thread; yield its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=0.2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
