"""What every pipeline service shares: the app factory, health endpoints, {"error"} answers, the runner.

/healthz says the process is alive; /ready says it should receive traffic (false until start-up work is
done and again once a SIGTERM starts the drain), so discovery and the supervisor never route to a
process that is starting or stopping.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from types import FrameType

import orjson
import uvicorn
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from services.common.telemetry import setup_service

log = logging.getLogger(__name__)

JSON = "application/json"


class BadRequest(Exception):
    """Input the service refuses: answered as `status` with {"error": message}."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_response(payload: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status, headers, media_type=JSON)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status, headers)


class Health:
    ready = False


def create_app(
    service: str,
    *,
    on_start: Callable[[], Awaitable[None]] | None = None,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> FastAPI:
    """A FastAPI app with telemetry, /healthz, /ready and the BadRequest -> {"error"} handler."""
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

    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, exc: BadRequest) -> Response:
        return error_response(exc.status, exc.message)

    setup_service(app, service)
    return app


class _DrainingServer(uvicorn.Server):
    """SIGTERM/SIGINT: /ready turns 503 at once, in-flight requests finish, then uvicorn stops."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, grace: float) -> None:
        super().__init__(config)
        self.app = app
        self.grace = grace
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.app.state.health.ready = False
        if self._draining or self.grace <= 0:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        threading.Timer(self.grace, super().handle_exit, (sig, frame)).start()


def run(app: FastAPI, host: str, port: int, drain_grace: float = 0.0) -> int:
    config = uvicorn.Config(
        app, host=host, port=port, access_log=False, log_config=None, timeout_graceful_shutdown=10, lifespan="on"
    )
    _DrainingServer(config, app, drain_grace).run()
    return 0
