"""Tracing configuration from OTEL_* variables, the JSON-lines exporter, and trace ids on log lines.
(The cross-service trace through real processes is tests/observability/test_stack_live.py.)"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import ecs_logging
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from services.common.tracing import JsonLinesSpanExporter, TraceContextLogFilter, exporter_names


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp"]),
        ({"MESHSERVE_TRACES_FILE": "/tmp/spans.jsonl"}, ["file"]),
        ({"OTEL_TRACES_EXPORTER": "console,file", "MESHSERVE_TRACES_FILE": "x"}, ["console", "file"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
    ],
)
def test_exporters_follow_the_standard_variables(env: dict[str, str], expected: list[str]) -> None:
    assert exporter_names(env) == expected


def test_spans_are_appended_as_json_lines_and_logs_carry_their_ids(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(str(path))))
    tracer = provider.get_tracer("test")

    records: list[str] = []
    handler = logging.Handler()
    handler.setFormatter(ecs_logging.StdlibFormatter())
    handler.addFilter(TraceContextLogFilter())
    handler.emit = lambda record: records.append(handler.format(record))  # type: ignore[method-assign]
    logger = logging.getLogger("test.tracing")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with tracer.start_as_current_span("outer") as outer, tracer.start_as_current_span("inner"):
            logger.warning("inside")
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)

    spans = [json.loads(line) for line in path.read_text().splitlines()]
    assert [s["name"] for s in spans] == ["inner", "outer"]
    inner, outer_json = spans
    assert inner["parent_id"] == outer_json["context"]["span_id"]
    inside, outside = (json.loads(r) for r in records)
    trace_id = format(outer.get_span_context().trace_id, "032x")
    assert inside["trace"]["id"] == trace_id == inner["context"]["trace_id"].removeprefix("0x")
    assert inside["span"]["id"] == inner["context"]["span_id"].removeprefix("0x")
    assert "trace" not in outside


def test_otlp_export_reaches_a_collector_endpoint(tmp_path: Path) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT alone turns on OTLP/http: a real POST of protobuf spans to /v1/traces."""
    import http.server
    import subprocess
    import sys
    import threading

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received: list[tuple[str, str, bytes]] = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append((self.path, self.headers["content-type"], body))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            return None

    server = http.server.HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    script = (
        "from services.common.tracing import configure_tracing\n"
        "from opentelemetry import trace\n"
        "assert configure_tracing('otlp-test')\n"
        "with trace.get_tracer('t').start_as_current_span('exported-span'): pass\n"
        "trace.get_tracer_provider().shutdown()\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{server.server_port}"
    try:
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr
    assert [(path, kind) for path, kind, _ in received] == [("/v1/traces", "application/x-protobuf")]
    request = ExportTraceServiceRequest.FromString(received[0][2])
    resource = request.resource_spans[0]
    service = {a.key: a.value.string_value for a in resource.resource.attributes}["service.name"]
    assert service == "otlp-test"
    assert [s.name for s in resource.scope_spans[0].spans] == ["exported-span"]
