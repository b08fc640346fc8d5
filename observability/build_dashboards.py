"""Writes the Grafana dashboards under observability/dashboards/ (`python -m observability.build_dashboards`).

The JSON files are the artefacts Grafana (and the infra ConfigMaps) load; this script is how they
are made, so a panel is a line here rather than forty lines of JSON. A test checks the files are
current. Queries use template variables ($model, $version, $stable, $canary, $route) and
`$__rate_interval`; `observability.dashboards.panel_queries` substitutes them for tests.

The service overview and canary comparison read the serving workloads' metrics through
observability/queries.py (the alerts' own SLI queries), so they show data on the local stack and
on a cluster alike; its routes come from mesh/mesh.yaml. The gateway dashboard is the local
stack's embedded gateway only; on a cluster the cluster-edge dashboard (Istio's standard metrics)
and Kong's own dashboard cover the edge.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mesh.spec import MeshSpec, load_spec
from observability import queries

DASHBOARD_DIR = Path(__file__).with_name("dashboards")
RI = "$__rate_interval"

GW_REQ = "meshserve_gateway_requests_total"
GW_DUR = "meshserve_gateway_request_duration_seconds"
HTTP_REQ = "meshserve_http_requests_total"
HTTP_DUR = "meshserve_http_request_duration_seconds"
INF = "meshserve_inference"


def _ratio(errors: str, total: str, by: str) -> str:
    """errors/total per group; groups with traffic but no errors read 0 (not an empty series)."""
    return f"(sum by ({by}) ({errors}) or sum by ({by}) ({total}) * 0) / sum by ({by}) ({total})"


def _quantile(q: float, metric: str, matchers: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{matchers}}}[{RI}])))"


def _events(expr: str) -> str:
    """Counters that only appear once an event happened (a retry, an ejection): 0 until then."""
    return f"{expr} or vector(0)"


def _panel(title: str, targets: list[tuple[str, str]], unit: str = "short", kind: str = "timeseries") -> dict:
    return {
        "title": title,
        "type": kind,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def _variable(name: str, query: str, *, multi: bool = False, include_all: bool = False) -> dict:
    return {
        "name": name,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "multi": multi,
        "includeAll": include_all,
    }


DATASOURCE = {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}


def _dashboard(
    uid: str, title: str, panels: list[dict], variables: list[dict], description: str = ""
) -> dict[str, Any]:
    laid_out = []
    for i, panel in enumerate(panels):
        laid_out.append({"id": i + 1, "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8}, **panel})
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["meshserve"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [DATASOURCE, *variables]},
        "panels": laid_out,
    }


def _routes(spec: MeshSpec) -> list[queries.RouteSLI]:
    """Every route users call: each pipeline's, then each model's direct infer route."""
    routes = [p.route for p in spec.pipelines.values()] + [f"/v2/models/{m}/infer" for m in spec.models]
    return [queries.route_sli(spec, route) for route in routes]


def _by_route(spec: MeshSpec, build) -> str:
    """One series per route, each from its own workload (queries.route_sli), labelled `route`."""
    parts = [f'label_replace({build(sli)}, "route", {queries.quote(sli.route)}, "", "")' for sli in _routes(spec)]
    return " or ".join(parts)


def service_overview(spec: MeshSpec) -> dict:
    http_total = f"rate({HTTP_REQ}[{RI}])"
    http_errors = f'rate({HTTP_REQ}{{code=~"5.."}}[{RI}])'
    return _dashboard(
        "meshserve-overview",
        "meshserve / service overview",
        [
            _panel(
                "Throughput by route",
                [(_by_route(spec, lambda sli: queries.route_request_rate(sli, RI)), "{{route}}")],
                "reqps",
            ),
            _panel(
                "Error rate (failed share) by route",
                [(_by_route(spec, lambda sli: queries.route_error_ratio(sli, RI)), "{{route}}")],
                "percentunit",
            ),
            _panel(
                "Latency by route (p50 / p95 / p99)",
                [
                    (
                        _by_route(spec, lambda sli, q=q: queries.route_latency_quantile(sli, q, RI)),
                        f"{{{{route}}}} p{int(q * 100)}",
                    )
                    for q in (0.5, 0.95, 0.99)
                ],
                "s",
            ),
            _panel("Throughput by service", [(f"sum by (service) ({http_total})", "{{service}}")], "reqps"),
            _panel(
                "Error rate by service",
                [(_ratio(http_errors, http_total, "service"), "{{service}}")],
                "percentunit",
            ),
            _panel(
                "Latency by service (p95 / p99)",
                [(_quantile(q, HTTP_DUR, "", "service"), f"{{{{service}}}} p{int(q * 100)}") for q in (0.95, 0.99)],
                "s",
            ),
            _panel("Targets up by service", [("sum by (service) (up)", "{{service}}")]),
            _panel(
                "SLO: failed share (5m and 1h windows of the burn-rate alerts)",
                [(f'meshserve:slo_error_ratio:rate{w}{{route=~"$route"}}', f"{{{{route}}}} {w}") for w in ("5m", "1h")],
                "percentunit",
            ),
            _panel(
                "SLO: share slower than the p95 / p99 bound (5m)",
                [('meshserve:slo_slow_ratio:rate5m{route=~"$route"}', "{{route}} over the p{{quantile}} bound")],
                "percentunit",
            ),
        ],
        [_variable("route", "label_values(meshserve:slo_error_ratio:rate5m, route)", multi=True, include_all=True)],
        "Routes measured at the serving workload (a pipeline's business API, a model's servers), the same "
        "series the SLO alerts read: local stack and cluster alike.",
    )


def model_serving() -> dict:
    sel = 'model=~"$model",version=~"$version"'
    return _dashboard(
        "meshserve-model-serving",
        "meshserve / model serving",
        [
            _panel(
                "Requests by version and outcome",
                [
                    (
                        f"sum by (version, outcome) (rate({INF}_requests_total{{{sel}}}[{RI}]))",
                        "v{{version}} {{outcome}}",
                    )
                ],
                "reqps",
            ),
            _panel(
                "Queue time vs compute time (p95)",
                [
                    (_quantile(0.95, f"{INF}_queue_duration_seconds", sel, "version"), "v{{version}} queue"),
                    (_quantile(0.95, f"{INF}_compute_duration_seconds", sel, "version"), "v{{version}} compute"),
                ],
                "s",
            ),
            _panel(
                "Request latency (p50 / p95 / p99)",
                [
                    (
                        _quantile(q, f"{INF}_request_duration_seconds", sel, "version"),
                        f"v{{{{version}}}} p{int(q * 100)}",
                    )
                    for q in (0.5, 0.95, 0.99)
                ],
                "s",
            ),
            _panel(
                "Batch size distribution",
                [(f"sum by (le) (increase({INF}_batch_size_bucket{{{sel}}}[{RI}]))", "{{le}}")],
                kind="heatmap",
            ),
            _panel(
                "Mean batch size (inferences / executions)",
                [
                    (
                        f"sum by (version) (rate({INF}_count_total{{{sel}}}[{RI}]))"
                        f" / sum by (version) (rate({INF}_exec_count_total{{{sel}}}[{RI}]))",
                        "v{{version}}",
                    )
                ],
            ),
            _panel(
                "In flight and queued",
                [
                    (f"sum by (version) ({INF}_in_flight{{{sel}}})", "v{{version}} in flight"),
                    (f"sum by (version) ({INF}_queue_depth{{{sel}}})", "v{{version}} queued"),
                ],
            ),
            _panel(
                "Model state",
                [(f"sum by (version, state) (meshserve_model_state{{{sel}}} == 1)", "v{{version}} {{state}}")],
                kind="state-timeline",
            ),
            _panel(
                "Execution providers in use (a GPU version showing only CPU computes on the CPU)",
                [
                    (
                        f"sum by (version, provider) (meshserve_model_execution_provider{{{sel}}})",
                        "v{{version}} {{provider}}",
                    )
                ],
                kind="state-timeline",
            ),
        ],
        [
            _variable("model", f"label_values({INF}_requests_total, model)"),
            _variable(
                "version",
                f'label_values({INF}_requests_total{{model="$model"}}, version)',
                multi=True,
                include_all=True,
            ),
        ],
    )


def canary_comparison() -> dict:
    def sel(v: str) -> str:
        return f'model="$model",version="${v}"'

    def both(build) -> list[tuple[str, str]]:
        return [(build(v), f"{v} v${v}") for v in ("stable", "canary")]

    def err(v: str) -> str:  # the figure canary analysis gates on (mesh/canary_analysis.py)
        return queries.version_error_ratio("$model", f"${v}", RI)

    mirror = 'model="$model",primary=~"$stable|$canary",mirror=~"$stable|$canary"'
    return _dashboard(
        "meshserve-canary",
        "meshserve / canary comparison",
        [
            _panel(
                "Traffic share",
                both(
                    lambda v: (
                        f"sum(rate({INF}_requests_total{{{sel(v)}}}[{RI}]))"
                        f' / scalar(sum(rate({INF}_requests_total{{model="$model"}}[{RI}])))'
                    )
                ),
                "percentunit",
            ),
            _panel("Error rate (error, rejected, timeout share)", both(err), "percentunit"),
            _panel("p95 latency", both(lambda v: queries.version_latency_quantile("$model", f"${v}", 0.95, RI)), "s"),
            _panel("p99 latency", both(lambda v: queries.version_latency_quantile("$model", f"${v}", 0.99, RI)), "s"),
            _panel(
                "Top-1 agreement of mirrored answers (local stack: the embedded gateway mirrors)",
                [
                    (
                        _ratio(
                            f'rate(meshserve_gateway_mirror_agreement_total{{{mirror},agree="true"}}[{RI}])',
                            f"rate(meshserve_gateway_mirror_agreement_total{{{mirror}}}[{RI}])",
                            "model",
                        ),
                        "agreement",
                    )
                ],
                "percentunit",
            ),
            _panel(
                "Mirrored requests by outcome (local stack: embedded gateway)",
                [
                    (
                        _events(
                            "sum by (outcome) (rate(meshserve_gateway_mirror_requests_total"
                            f'{{model="$model",version="$canary"}}[{RI}]))'
                        ),
                        "{{outcome}}",
                    )
                ],
                "reqps",
            ),
        ],
        [
            _variable("model", f"label_values({INF}_requests_total, model)"),
            _variable("stable", f'label_values({INF}_requests_total{{model="$model"}}, version)'),
            _variable("canary", f'label_values({INF}_requests_total{{model="$model"}}, version)'),
        ],
        "Stable against canary, read at the model servers (local stack and cluster alike). The mirror panels "
        "come from the local stack's embedded gateway; on a cluster Istio mirrors without comparing answers.",
    )


def gateway() -> dict:
    return _dashboard(
        "meshserve-gateway",
        "meshserve / gateway (local stack: embedded gateway)",
        [
            _panel(
                "Requests by route and code",
                [(f"sum by (route, code) (rate({GW_REQ}[{RI}]))", "{{route}} {{code}}")],
                "reqps",
            ),
            _panel(
                "Requests by upstream version",
                [(f"sum by (upstream, version) (rate({GW_REQ}[{RI}]))", "{{upstream}} v{{version}}")],
                "reqps",
            ),
            _panel(
                "Rate-limited (429) by consumer",
                [(_events(f"sum by (consumer) (rate(meshserve_gateway_rate_limited_total[{RI}]))"), "{{consumer}}")],
                "reqps",
            ),
            _panel(
                "Retries by upstream",
                [(_events(f"sum by (upstream) (rate(meshserve_gateway_retries_total[{RI}]))"), "{{upstream}}")],
                "reqps",
            ),
            _panel(
                "Outlier ejections",
                [
                    (_events(f"sum by (upstream) (increase(meshserve_gateway_ejections_total[{RI}]))"), "{{upstream}}"),
                    (_events("sum by (upstream) (meshserve_gateway_ejected)"), "{{upstream}} ejected now"),
                ],
            ),
            _panel(
                "Rejected (pending overflow, no healthy host)",
                [
                    (
                        _events(f"sum by (upstream, reason) (rate(meshserve_gateway_rejected_total[{RI}]))"),
                        "{{upstream}} {{reason}}",
                    )
                ],
                "reqps",
            ),
            _panel(
                "Mirrored requests",
                [
                    (
                        _events(
                            f"sum by (model, version, outcome) (rate(meshserve_gateway_mirror_requests_total[{RI}]))"
                        ),
                        "{{model}} v{{version}} {{outcome}}",
                    )
                ],
                "reqps",
            ),
            _panel("Gateway latency p95 by route", [(_quantile(0.95, GW_DUR, "", "route"), "{{route}}")], "s"),
        ],
        [],
        "Local stack only: the embedded gateway (`meshserve up`). On a cluster Kong is the edge and this "
        "gateway does not run; see the cluster edge (Istio) dashboard there. SLIs: the service overview.",
    )


def cluster_edge() -> dict:
    """Istio's standard metrics (cluster only): what the sidecars saw, for the edge the workloads cannot see
    (requests answered by Envoy itself: no healthy upstream, overflow). Durations are in milliseconds."""
    dest = 'reporter="destination",destination_workload_namespace="$namespace"'
    total = f"rate(istio_requests_total{{{dest}}}[{RI}])"
    errors = f'rate(istio_requests_total{{{dest},response_code=~"5.."}}[{RI}])'
    edge = 'reporter="source",source_workload_namespace="$edge_namespace"'
    by = "destination_service_name"
    return _dashboard(
        "meshserve-cluster-edge",
        "meshserve / cluster edge (Istio)",
        [
            _panel(
                "Requests by destination service and code (reporter=destination)",
                [(f"sum by ({by}, response_code) ({total})", "{{destination_service_name}} {{response_code}}")],
                "reqps",
            ),
            _panel("5xx share by destination service", [(_ratio(errors, total, by), f"{{{{{by}}}}}")], "percentunit"),
            _panel(
                "p95 latency by destination service",
                [
                    (
                        f"histogram_quantile(0.95, sum by ({by}, le) "
                        f"(rate(istio_request_duration_milliseconds_bucket{{{dest}}}[{RI}]))) / 1000",
                        f"{{{{{by}}}}}",
                    )
                ],
                "s",
            ),
            _panel(
                "Traffic split by version (what the mesh routed)",
                [
                    (
                        f"sum by (destination_canonical_service, destination_version) ({total})",
                        "{{destination_canonical_service}} {{destination_version}}",
                    )
                ],
                "reqps",
            ),
            _panel(
                "Sent by the edge (Kong's sidecar, reporter=source) by code",
                [
                    (
                        f"sum by ({by}, response_code) (rate(istio_requests_total{{{edge}}}[{RI}]))",
                        "{{destination_service_name}} {{response_code}}",
                    )
                ],
                "reqps",
            ),
            _panel(
                "Answered by Envoy itself (response flags: UH no healthy upstream, UO overflow, UT timeout)",
                [
                    (
                        f"sum by ({by}, response_flags) "
                        f'(rate(istio_requests_total{{{edge},response_flags!="-"}}[{RI}]))',
                        "{{destination_service_name}} {{response_flags}}",
                    )
                ],
                "reqps",
            ),
        ],
        [
            _variable("namespace", "label_values(istio_requests_total, destination_workload_namespace)"),
            _variable(
                "edge_namespace", 'label_values(istio_requests_total{reporter="source"}, source_workload_namespace)'
            ),
        ],
        "Cluster only: Istio's istio_requests_total / istio_request_duration_milliseconds, scraped through the "
        "ServiceMonitors' merged endpoint. The SLIs themselves are on the service overview; Kong's own "
        "dashboard covers its plugins (rate limits, auth).",
    )


def gpu() -> dict:
    """NVIDIA DCGM exporter metrics (a cluster with the GPU operator); no data on a CPU machine."""
    pod = 'namespace="$namespace",pod=~"$model-.*"'
    return _dashboard(
        "meshserve-gpu",
        "meshserve / GPU (DCGM)",
        [
            _panel(
                "GPU utilization",
                [(f"avg by (pod, gpu) (DCGM_FI_DEV_GPU_UTIL{{{pod}}})", "{{pod}} gpu{{gpu}}")],
                "percent",
            ),
            _panel(
                "Framebuffer memory used",
                [(f"sum by (pod, gpu) (DCGM_FI_DEV_FB_USED{{{pod}}}) * 1024 * 1024", "{{pod}} gpu{{gpu}}")],
                "bytes",
            ),
            _panel(
                "Tensor core activity",
                [(f"avg by (pod, gpu) (DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{{{pod}}})", "{{pod}} gpu{{gpu}}")],
                "percentunit",
            ),
            _panel(
                "Power draw", [(f"sum by (pod, gpu) (DCGM_FI_DEV_POWER_USAGE{{{pod}}})", "{{pod}} gpu{{gpu}}")], "watt"
            ),
            _panel(
                "Temperature", [(f"max by (pod, gpu) (DCGM_FI_DEV_GPU_TEMP{{{pod}}})", "{{pod}} gpu{{gpu}}")], "celsius"
            ),
            _panel(
                "XID errors",
                [(f"max by (pod, gpu) (DCGM_FI_DEV_XID_ERRORS{{{pod}}})", "{{pod}} gpu{{gpu}}")],
            ),
        ],
        [
            _variable("namespace", "label_values(DCGM_FI_DEV_GPU_UTIL, namespace)"),
            _variable("model", f"label_values({INF}_requests_total, model)"),
        ],
    )


BUILDERS = {
    "service-overview": lambda: service_overview(load_spec(check_repository=False)),
    "model-serving": model_serving,
    "canary-comparison": canary_comparison,
    "gateway": gateway,
    "cluster-edge": cluster_edge,
    "gpu-dcgm": gpu,
}


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {f"{name}.json": json.dumps(build(), indent=2) + "\n" for name, build in BUILDERS.items()}


def main() -> None:
    DASHBOARD_DIR.mkdir(exist_ok=True)
    for name, text in render().items():
        (DASHBOARD_DIR / name).write_text(text)
        print(DASHBOARD_DIR / name)


if __name__ == "__main__":
    main()
