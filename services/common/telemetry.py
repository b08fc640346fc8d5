"""One telemetry setup shared by every meshserve service: ECS JSON logs, Prometheus metrics.

Every service calls `setup_service(app, "<service-name>")` once. Tracing (OpenTelemetry) is
wired here too, so that no service configures its own exporters.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping

import ecs_logging
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common import metric_names as names
from services.common.settings import LOG_FORMAT_ENV
from services.common.tracing import TraceContextLogFilter, configure_tracing, instrument_app

SERVICE_NAME_ENV = "MESHSERVE_SERVICE_NAME"

# One set of latency buckets for every duration histogram, so dashboards compare like with like.
# Every SLO latency bound in mesh.yaml must be one of them: the latency burn-rate alerts count the
# requests under the bound (mesh/compile/alerts.py; tests/mesh/test_compile_alerts.py checks).
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

HTTP_REQUESTS = Counter(
    names.HTTP_REQUESTS,
    "HTTP requests answered, by service, route template, method and status code.",
    ["service", "route", "method", "code"],
)
HTTP_DURATION = Histogram(
    names.HTTP_DURATION,
    "Time from request start to response end, by service and route template.",
    ["service", "route"],
    buckets=LATENCY_BUCKETS,
)


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def log_format(stream: object, env: Mapping[str, str] = os.environ) -> str:
    """'json' or 'text': $MESHSERVE_LOG_FORMAT (auto | json | text); auto is text on a terminal only.

    Under the supervisor, in a pod or a pipe, stderr is not a terminal: JSON, which Filebeat ships and a
    log file keeps. A person running `meshserve serve` in a terminal reads one short line per event.
    """
    choice = env.get(LOG_FORMAT_ENV, "auto").lower()
    if choice not in ("auto", "json", "text"):
        raise ValueError(f"{LOG_FORMAT_ENV}={choice!r}: one of auto, json, text")
    if choice == "auto":
        isatty = getattr(stream, "isatty", None)
        return "text" if isatty is not None and isatty() else "json"
    return choice


def configure_logging(service: str, level: str | None = None) -> None:
    """Log to stderr: ECS JSON lines (Filebeat ships them; Kibana reads `service.name`), or text on a terminal."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format(sys.stderr) == "text":
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    else:
        handler.setFormatter(ecs_logging.StdlibFormatter(extra={"service": {"name": service}}))
    handler.addFilter(TraceContextLogFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("MESHSERVE_LOG_LEVEL", "INFO")).upper())
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def metrics_response() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class HTTPMetricsMiddleware:
    """Counts and times requests by route *template* (bounded labels, never raw paths)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/metrics":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            HTTP_REQUESTS.labels(self.service, template, scope["method"], str(status)).inc()
            HTTP_DURATION.labels(self.service, template).observe(time.perf_counter() - start)


def setup_service(app: Starlette, service: str, *, http_metrics: bool = True) -> None:
    """Logs, `/metrics`, per-route HTTP metrics and tracing (when `OTEL_*` asks for it) for one app.

    A raw ASGI callable (no add_middleware) gets its SERVER spans from `tracing.trace_asgi(app)`.
    """
    name = os.environ.setdefault(SERVICE_NAME_ENV, service)  # the supervisor's name (digits-v1) wins
    configure_logging(name)
    configure_tracing(name)

    async def metrics(_: Request) -> Response:
        return metrics_response()

    app.add_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    if http_metrics:
        app.add_middleware(HTTPMetricsMiddleware, service=service)
    instrument_app(app)
