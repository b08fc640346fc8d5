"""Against a REAL Prometheus scraping the REAL local stack (one of each for this module):
after a short bounded load every dashboard query and every alert's series return data, and one
request yields one trace across every service, correctly parented, with log lines carrying it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mesh.canary import apply_to_file
from mesh.canary_analysis import set_mirror
from mesh.compile.alerts import alert_signals, rule_groups
from mesh.spec import load_spec
from observability.dashboards import load_dashboards, panel_queries
from services.local.supervisor import LocalStack
from tests.observability.livestack import (
    VARIABLES,
    Driver,
    classify,
    copy_spec,
    infer,
    needs_prometheus,
    observed_stack,
    prometheus_url,
    query,
    until,
)

pytestmark = [needs_prometheus, pytest.mark.timeout(240)]
# DCGM metrics exist only where NVIDIA's exporter runs (a GPU cluster), Istio's only in a mesh: their
# queries must parse, not return data.
NO_LOCAL_DATA = {"gpu-dcgm.json", "cluster-edge.json"}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    tmp = tmp_path_factory.mktemp("observed")
    spec_path = copy_spec(tmp)
    # every stable infer answer is shadowed on v2, so the agreement series exist
    apply_to_file(spec_path, lambda doc: set_mirror(doc, "digits", {"version": 2, "percentage": 100}))
    with observed_stack(tmp / "run", spec_path, env={"MESHSERVE_ACCESS_LOG": "1"}) as running:
        yield running


@pytest.fixture(scope="module")
def loaded(stack: LocalStack) -> str:
    """~8 s of bounded traffic on both routes, then Prometheus has scraped it."""
    prometheus = prometheus_url(stack)
    until(lambda: len(query(prometheus, "up == 1")) >= len(stack.processes) - 1, 30, "every target up")
    with Driver(stack, classify, rate=25, limit=200) as pipeline, Driver(stack, infer, rate=25, limit=200) as direct:
        until(lambda: sum(pipeline.codes.values()) >= 150 and sum(direct.codes.values()) >= 150, 60, "the load")
    with httpx.Client(timeout=5) as client:  # the canary answers directly too (header override)
        assert all(infer(client, stack, i, **{"x-model-version": "2"}).status_code == 200 for i in range(20))
    assert pipeline.codes.get(200, 0) >= 150 and direct.codes.get(200, 0) >= 150, (pipeline.codes, direct.codes)
    until(
        lambda: query(
            prometheus,
            'sum(meshserve_http_requests_total{service="digits-classify",route="/v1/digits:classify"}) >= 150',
        ),
        20,
        "Prometheus to scrape the load",
    )
    return prometheus


def _dashboard_queries() -> list[tuple[str, str, str]]:
    return [
        (name, title, expr)
        for name, dashboard in load_dashboards().items()
        for title, expr in panel_queries(dashboard, VARIABLES, rate_interval="1m")
    ]


@pytest.mark.parametrize(("dashboard", "title", "expr"), _dashboard_queries(), ids=lambda v: str(v)[:40])
def test_dashboard_query_returns_data(loaded: str, dashboard: str, title: str, expr: str) -> None:
    if dashboard in NO_LOCAL_DATA:
        query(loaded, expr)  # accepted by Prometheus' parser; there is no DCGM exporter here
        return
    # the heatmap and rate panels need two scrapes after the load: poll briefly rather than fail at once
    until(lambda: query(loaded, expr), 10, f"data for {dashboard} / {title!r}:\n{expr}")


def test_the_route_variable_picks_routes_on_the_overview(loaded: str) -> None:
    """The by-route panels read each route from its own workload; `$route` chooses among them."""
    overview = load_dashboards()["service-overview.json"]
    route = "/v1/digits:classify"
    for title, expr in panel_queries(overview, {**VARIABLES, "route": route}, rate_interval="1m"):
        if title == "Throughput by route":
            shown = until(lambda expr=expr: query(loaded, expr), 10, f"data for {title!r} with route={route}")
            assert {s["metric"]["route"] for s in shown} == {route}
    everything = dict(panel_queries(overview, VARIABLES, rate_interval="1m"))["Throughput by route"]
    assert {s["metric"]["route"] for s in query(loaded, everything)} >= {route, "/v2/models/digits/infer"}


def _signals() -> list[tuple[str, str]]:
    return alert_signals(load_spec(check_repository=False))


@pytest.mark.parametrize(("alert", "expr"), _signals(), ids=lambda v: str(v)[:60])
def test_alert_series_return_data(loaded: str, alert: str, expr: str) -> None:
    until(lambda: query(loaded, expr), 15, f"data for {alert}:\n{expr}")


def test_every_rule_is_loaded_and_evaluates_cleanly(loaded: str) -> None:
    groups = httpx.get(f"{loaded}/api/v1/rules", timeout=10).json()["data"]["groups"]
    expected = {g["name"]: len(g["rules"]) for g in rule_groups(load_spec(check_repository=False))}
    assert {g["name"]: len(g["rules"]) for g in groups} == expected
    broken = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] == "err"]
    assert not broken


def test_every_alert_expression_parses(loaded: str) -> None:
    for group in rule_groups(load_spec(check_repository=False)):
        for rule in group["rules"]:
            query(loaded, rule["expr"])  # asserts success, with the expression in the message


# --------------------------------------------------------------------------- tracing


def _spans(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if TRACE_ID in line]


def test_one_request_is_one_trace_across_every_service(stack: LocalStack) -> None:
    parent = "00f067aa0ba902b7"
    with httpx.Client(timeout=5) as client:
        reply = classify(client, stack, 3, traceparent=f"00-{TRACE_ID}-{parent}-01")
    assert reply.status_code == 200, reply.text
    model_service = f"digits-v{reply.headers['x-model-version'].removeprefix('v')}"
    services = {
        "gateway",
        "digits-classify",
        "digits-classify-preprocess",
        model_service,
        "digits-classify-postprocess",
    }

    def complete() -> list[dict] | None:
        spans = _spans(stack.run_dir / "spans.jsonl")
        server = {s["resource"]["attributes"]["service.name"] for s in spans if s["kind"] == "SpanKind.SERVER"}
        names = {s["name"] for s in spans}
        return spans if services <= server and {"queue", "compute"} <= names else None

    spans = until(complete, 20, f"spans of trace {TRACE_ID} from {sorted(services)}")
    by_id = {s["context"]["span_id"]: s for s in spans}
    service_of = {sid: s["resource"]["attributes"]["service.name"] for sid, s in by_id.items()}

    assert {s["context"]["trace_id"] for s in spans} == {f"0x{TRACE_ID}"}
    for span in spans:
        if span["kind"] != "SpanKind.SERVER":
            continue
        service = service_of[span["context"]["span_id"]]
        if service == "gateway":
            assert span["parent_id"] == f"0x{parent}", "the gateway continues the caller's trace"
            continue
        caller = by_id.get(span["parent_id"])
        assert caller is not None, f"{service}'s SERVER span has no parent in the trace"
        assert caller["kind"] == "SpanKind.CLIENT", f"{service}'s SERVER span is not a child of a CLIENT span"
        expected_caller = "gateway" if service == "digits-classify" else "digits-classify"
        assert service_of[caller["context"]["span_id"]] == expected_caller, service
        # and the CLIENT span is a child of the caller's own SERVER span
        assert by_id[caller["parent_id"]]["kind"] == "SpanKind.SERVER"

    model_server = next(
        s
        for s in spans
        if s["kind"] == "SpanKind.SERVER"
        and service_of[s["context"]["span_id"]] == model_service
        and s["name"].endswith("/infer")
    )
    inner = {s["name"]: s for s in spans if s["parent_id"] == model_server["context"]["span_id"]}
    assert {"queue", "compute"} <= set(inner)
    assert inner["compute"]["attributes"]["meshserve.batch_size"] >= 1
    assert inner["queue"]["end_time"] <= inner["compute"]["end_time"]

    def logged() -> set[str] | None:
        found = set()
        for log in (stack.run_dir / "logs").glob("*.log"):
            for line in log.read_text(errors="replace").splitlines():
                if TRACE_ID in line and line.startswith("{"):
                    record = json.loads(line)
                    assert record["trace"]["id"] == TRACE_ID and len(record["span"]["id"]) == 16
                    found.add(record["service"]["name"])
        return found if services <= found else None

    until(logged, 10, f"ECS log lines carrying trace.id {TRACE_ID} from {sorted(services)}")
