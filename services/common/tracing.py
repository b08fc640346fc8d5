"""OpenTelemetry tracing configured from the standard `OTEL_*` environment variables.

Exporters (`OTEL_TRACES_EXPORTER`, comma-separated): `otlp` (OTLP/http; endpoint and headers from
`OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT` / `_HEADERS`), `console`, `file` (JSON lines appended to
`MESHSERVE_TRACES_FILE`, one span per line, in the console exporter's format: the local stack
and the tests read it), `none`. Unset, it is `otlp` when an OTLP endpoint is set, `file` when
`MESHSERVE_TRACES_FILE` is set, and otherwise tracing stays off: no middleware, no cost.
Sampling follows `OTEL_TRACES_SAMPLER[_ARG]`; batching `OTEL_BSP_*`; the resource
`OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanKind
from opentelemetry.util.http import parse_excluded_urls

TRACES_FILE_ENV = "MESHSERVE_TRACES_FILE"
ACCESS_LOG_ENV = "MESHSERVE_ACCESS_LOG"  # "1": one ECS line per traced request, with trace.id/span.id
# Probes and scrapes would drown the traces that matter.
EXCLUDED_URLS = "/metrics,/health,/ready,/live,/v2/health"

_configured: bool | None = None
_lock = threading.Lock()


class JsonLinesSpanExporter(SpanExporter):
    """Appends finished spans as JSON lines; one write per batch, so processes can share a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        text = "".join(span.to_json(indent=None) + "\n" for span in spans)
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(text)
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def exporter_names(env: dict[str, str] | os._Environ = os.environ) -> list[str]:
    """Which exporters the environment asks for (see the module docstring for the defaults)."""
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return []
    explicit = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if explicit:
        return [n.strip() for n in explicit.split(",") if n.strip() and n.strip() != "none"]
    names = []
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        names.append("otlp")
    if env.get(TRACES_FILE_ENV):
        names.append("file")
    return names


def _exporter(name: str) -> SpanExporter:
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if name == "console":
        return ConsoleSpanExporter()
    if name == "file":
        path = os.environ.get(TRACES_FILE_ENV)
        if not path:
            raise ValueError(f"OTEL_TRACES_EXPORTER=file needs {TRACES_FILE_ENV}=<path of a JSON-lines file>")
        return JsonLinesSpanExporter(path)
    raise ValueError(f"unknown OTEL_TRACES_EXPORTER {name!r}: use otlp, console, file or none")


def configure_tracing(service: str) -> bool:
    """Install the process's TracerProvider once; True when spans are recorded and exported."""
    global _configured
    with _lock:
        if _configured is not None:
            return _configured
        names = exporter_names()
        if names:
            resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or service})
            provider = TracerProvider(resource=resource)
            for name in names:
                provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
            trace.set_tracer_provider(provider)
            _instrument_clients()
        _configured = bool(names)
        return _configured


def tracing_enabled() -> bool:
    return bool(_configured)


def _instrument_clients() -> None:
    """httpx calls (tests, tools) get CLIENT spans and carry `traceparent`. The shared client
    (services/common/client.py) makes its own CLIENT spans on its httptools transport."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    instrumentor = HTTPXClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


def instrument_app(app: Any) -> None:
    """SERVER spans for a FastAPI app (FastAPI's instrumentor) or a Starlette app (ASGI middleware)."""
    if not tracing_enabled():
        return
    try:
        from fastapi import FastAPI
    except ImportError:  # pragma: no cover - fastapi is a core dependency
        FastAPI = ()  # type: ignore[assignment]
    if isinstance(app, FastAPI):
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app, excluded_urls=EXCLUDED_URLS, exclude_spans=["receive", "send"], **_server_hooks()
        )
    else:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        app.add_middleware(
            OpenTelemetryMiddleware,
            excluded_urls=parse_excluded_urls(EXCLUDED_URLS),
            exclude_spans=["receive", "send"],
            **_server_hooks(),
        )


def trace_asgi(app: Any) -> Any:
    """Wrap a raw ASGI callable (the gateway) so each request gets a SERVER span; identity when off."""
    if not tracing_enabled():
        return app
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(
        app, excluded_urls=parse_excluded_urls(EXCLUDED_URLS), exclude_spans=["receive", "send"], **_server_hooks()
    )


def record_span(name: str, start_ns: int, end_ns: int, attributes: dict[str, Any] | None = None) -> None:
    """A finished child span of the current span with given times (time.time_ns() clock).

    For work measured elsewhere and attributed afterwards, e.g. a request's wait in the batcher
    queue and the batch execution it shared: call from the request's own task once it resumes.
    """
    parent = trace.get_current_span()
    if not parent.is_recording():
        return
    span = trace.get_tracer("meshserve").start_span(
        name, kind=SpanKind.INTERNAL, start_time=start_ns, attributes=attributes
    )
    span.end(end_time=end_ns)


_access = logging.getLogger("meshserve.access")


def _access_log(_span: Any, scope: dict[str, Any]) -> None:
    """Runs inside the SERVER span, so the line carries its trace and span ids."""
    method, path = scope.get("method", ""), scope.get("path", "")
    _access.info("%s %s", method, path, extra={"http.request.method": method, "url.path": path})


def _server_hooks() -> dict[str, Any]:
    """Opt-in access log (MESHSERVE_ACCESS_LOG=1): off by default, as it costs on every request."""
    on = os.environ.get(ACCESS_LOG_ENV, "").lower() in ("1", "true", "yes")
    return {"server_request_hook": _access_log} if on else {}


class TraceContextLogFilter(logging.Filter):
    """Puts the current trace and span ids on each log record as ECS `trace.id` / `span.id`."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            setattr(record, "trace.id", format(context.trace_id, "032x"))
            setattr(record, "span.id", format(context.span_id, "016x"))
        return True
