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
