"""What every pipeline service shares: the app factory, health endpoints, {"error"} answers, the runner.

/healthz says the process is alive; /ready says it should receive traffic (false until start-up work is
done and again once a SIGTERM starts the drain), so discovery and the supervisor never route to a
process that is starting or stopping.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from services.common.errors import HTTPError, error_body
from services.common.httpserver import DrainingServer
from services.common.httpserver import config as http_config
from services.common.telemetry import setup_service

log = logging.getLogger(__name__)

JSON = "application/json"


class BadRequest(HTTPError):
    """Input the service refuses: answered as `status` with {"error": message}."""


def json_response(payload: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status, headers, media_type=JSON)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(message), status, headers, media_type=JSON)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes (chunked bodies have no length to check)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class Health:
    ready = False


def create_app(
    service: str,
    *,
    on_start: Callable[[], Awaitable[None]] | None = None,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> FastAPI:
    """A FastAPI app with telemetry, /healthz, /ready and the HTTPError (BadRequest...) -> {"error"} handler."""
    health = Health()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if on_start is not None:
            await on_start()
        health.ready = True
        try:
            yield
        finally:
            health.ready = False
            if on_stop is not None:
                await on_stop()

    app = FastAPI(title=service, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.health = health
    app.state.service = service

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return json_response({"status": "alive", "service": service})

    @app.get("/ready", include_in_schema=False)
    async def ready() -> Response:
        if health.ready:
            return json_response({"status": "ready", "service": service})
        return error_response(503, f"{service} is not ready", {"retry-after": "1"})

    @app.exception_handler(HTTPError)  # BadRequest, and the wire codec's ProtocolError (a malformed tensor frame)
    async def bad_request(_: Request, exc: HTTPError) -> Response:
        return error_response(exc.status, exc.message)

    setup_service(app, service)
    return app


def run(app: FastAPI, host: str, port: int, drain_grace: float = 0.0, drain_limit: float = 10.0) -> int:
    """SIGTERM/SIGINT: /ready turns 503 at once, requests in flight finish (within `drain_limit`), then exit.

    Header caps, read timeouts and trailers as every service (services.common.httpserver)."""
    config = http_config(app, host=host, port=port, timeout_graceful_shutdown=drain_limit)
    DrainingServer(config, on_drain=lambda: setattr(app.state.health, "ready", False), grace=drain_grace).run()
    return 0
