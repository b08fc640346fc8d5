"""Fixtures for the discovery tests: the fake Consul agent and a server whose readiness the test controls."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .fake_consul import FakeConsulState, fake_consul_app, serve_in_thread


@pytest.fixture
def fake_consul() -> Iterator[tuple[str, FakeConsulState]]:
    state = FakeConsulState()
    with serve_in_thread(fake_consul_app(state)) as url:
        yield url, state


@pytest.fixture
def instances() -> Iterator[tuple[str, dict[str, bool]]]:
    """A real HTTP server whose /ready/<name> answers 200 or 503 as `ready[name]` says."""
    ready: dict[str, bool] = {}

    async def probe(request: Request) -> Response:
        ok = ready.get(request.path_params["name"], False)
        return Response(b"ok" if ok else b"not ready", status_code=200 if ok else 503)

    with serve_in_thread(Starlette(routes=[Route("/ready/{name}", probe)])) as url:
        yield url, ready
