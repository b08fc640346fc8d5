"""The Grafana dashboards, derived from the spec: `build(spec)` gives the JSON models of every dashboard.

They are built with Grafana's own typed builders (grafana-foundation-sdk, pinned in pyproject.toml), so a
panel is a few lines here and the JSON follows Grafana's schema. The same models are compiled into
Grafana sidecar ConfigMaps (mesh/compile/monitoring.py), written as the files under
observability/dashboards/ (`python -m observability.build_dashboards`; a test checks they are current)
and drawn live by the local console (observability/console/): one source, three consumers. The canary
dashboard opens on the spec's stable and canary. Queries use template variables ($model, $version,
$stable, $canary, $route) and `$__rate_interval`; `observability.dashboards.panel_queries` substitutes
them for tests.

The service overview and canary comparison read the serving workloads' metrics through
mesh/compile/promql.py (the alerts' own SLI queries) and the alerts' recording rules, so they show data
on the local stack and on a cluster alike; its routes come from the spec. The gateway dashboard is the
local stack's embedded gateway only; on a cluster the cluster-edge dashboard (Istio's standard metrics)
and Kong's own dashboard cover the edge. Metric names come from services/common/metric_names.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from grafana_foundation_sdk.builders import common as gc
from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import heatmap, prometheus, statetimeline, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as gcm
from grafana_foundation_sdk.models import dashboard as gm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from mesh.compile import promql
from mesh.compile.alerts import ERROR_RATIO, SLOW_RATIO
from mesh.spec import MeshSpec
from services.common import metric_names as names

RI = "$__rate_interval"
DATASOURCE = gm.DataSourceRef(type_val="prometheus", uid="${datasource}")
# Grafana 10.0 knows schema 38, 10.4 and 11 write 39; older schemas are migrated on import, newer ones are
# not understood by older Grafanas. The SDK (pinned in pyproject.toml) writes the one below.
SCHEMA_VERSION_RANGE = (36, 39)

Target = tuple[str, str]  # (PromQL, legend format)


def _ratio(errors: str, total: str, by: str) -> str:
    """errors/total per group; groups with traffic but no errors read 0 (not an empty series)."""
    return f"(sum by ({by}) ({errors}) or sum by ({by}) ({total}) * 0) / sum by ({by}) ({total})"


def _quantile(q: float, metric: str, matchers: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{matchers}}}[{RI}])))"


def _events(expr: str) -> str:
    """Counters that only appear once an event happened (a retry, an ejection): 0 until then."""
    return f"{expr} or vector(0)"


PANEL_KINDS: dict[str, Callable[[], Any]] = {
    "timeseries": timeseries.Panel,
    "heatmap": heatmap.Panel,
    "state-timeline": statetimeline.Panel,
}


def _panel(title: str, targets: list[Target], unit: str = "short", kind: str = "timeseries") -> Any:
    """One panel builder: 8 high, half the width; the dashboard builder lays them out two by two."""
    panel = PANEL_KINDS[kind]().title(title).datasource(DATASOURCE).height(8).span(12)
    if kind == "heatmap":  # Prometheus buckets are the cells (counts): Grafana must not bucket them again
        panel = panel.calculate(False).y_axis(heatmap.YAxisConfig().unit(unit)).unit("short")
    else:  # a legend list under the chart, every series in the tooltip (and panel options never null)
        shown = gc.VizLegendOptions().show_legend(True).display_mode(gcm.LegendDisplayMode.LIST)
        tooltip = gc.VizTooltipOptions().mode(gcm.TooltipDisplayMode.MULTI).sort(gcm.SortOrder.DESCENDING)
        panel = panel.unit(unit).legend(shown.placement(gcm.LegendPlacement.BOTTOM)).tooltip(tooltip)
    for i, (expr, legend) in enumerate(targets):
        query = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(chr(ord("A") + i))
        if kind == "heatmap":
            query = query.format(PromQueryFormat.HEATMAP)  # one series per `le`, sorted, de-accumulated
        panel = panel.with_target(query)
    return panel


def _variable(
    name: str, query: str, *, multi: bool = False, include_all: bool = False, default: str | None = None
) -> gd.QueryVariable:
    variable = (
        gd.QueryVariable(name)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(gm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(gm.VariableSort.NUMERICAL_ASC)
        .multi(multi)
        .include_all(include_all)
    )
    if include_all:  # "All" is every value, also one the variable's query does not list (e.g. a route without SLO)
        variable = variable.all_value(".*")
    if default is not None:  # kept while it is among the query's values (Grafana's rule for `current`)
        text = "All" if default == "$__all" else default
        variable = variable.current(gm.VariableOption(selected=True, text=text, value=default))
    return variable


def _dashboard(
    uid: str, title: str, panels: list[Any], variables: list[gd.QueryVariable], description: str = ""
) -> dict[str, Any]:
    """The Grafana JSON model (a dict) of one dashboard, built by grafana-foundation-sdk."""
    builder = (
        gd.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["meshserve"])
        .timezone("utc")
        .refresh("10s")
        .time("now-1h", "now")
        .version(1)
        .with_variable(gd.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )
    for variable in variables:
        builder = builder.with_variable(variable)
    for i, panel in enumerate(panels):
        builder = builder.with_panel(panel.id(i + 1))
    return json.loads(json.dumps(builder.build(), cls=JSONEncoder))


def canary_pair(spec: MeshSpec) -> tuple[str, int, int]:
    """(model, stable, canary) the canary dashboard opens on: the first model with two versions, its
    `traffic.stable`, and the other version with the most weight (the highest one when none has any)."""
    for name, model in spec.models.items():
        if len(model.versions) < 2:
            continue
        stable = model.stable_version()
        weights = model.weights()
        others = sorted((v for v in model.versions if v != stable), key=lambda v: (weights.get(v, 0), v))
        return name, stable, others[-1]
    name = next(iter(spec.models))
    only = next(iter(spec.models[name].versions))
    return name, only, only


def _routes(spec: MeshSpec) -> list[promql.RouteSLI]:
    """Every route users call: each pipeline's, then each model's direct infer route."""
    routes = [p.route for p in spec.pipelines.values()] + [f"/v2/models/{m}/infer" for m in spec.models]
    return [promql.route_sli(spec, route) for route in routes]


def _by_route(spec: MeshSpec, build) -> str:
    """One series per route, each from its own workload (promql.route_sli), labelled `route`, kept when
    the route matches the `$route` variable. The routes come from the spec (each reads a different
    workload's series), the choice among them from the variable: label_replace marks the matching series
    `shown="1"` (it leaves the others alone) and `and on(shown)` keeps only those."""
    parts = [f'label_replace({build(sli)}, "route", {promql.quote(sli.route)}, "", "")' for sli in _routes(spec)]
    marked = f'label_replace({" or ".join(parts)}, "shown", "1", "route", "$route")'
    return f'{marked} and on(shown) label_replace(vector(1), "shown", "1", "", "")'


def service_overview(spec: MeshSpec) -> dict:
    http_total = f"rate({names.HTTP_REQUESTS}[{RI}])"
    http_errors = f'rate({names.HTTP_REQUESTS}{{code=~"5.."}}[{RI}])'
    return _dashboard(
        "meshserve-overview",
        "meshserve / service overview",
        [
            _panel(
                "Throughput by route",
                [(_by_route(spec, lambda sli: promql.route_request_rate(sli, RI)), "{{route}}")],
                "reqps",
            ),
            _panel(
                "Error rate (failed share) by route",
                [(_by_route(spec, lambda sli: promql.route_error_ratio(sli, RI)), "{{route}}")],
                "percentunit",
            ),
            _panel(
                "Latency by route (p50 / p95 / p99)",
                [
                    (
                        _by_route(spec, lambda sli, q=q: promql.route_latency_quantile(sli, q, RI)),
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
                [
                    (_quantile(q, names.HTTP_DURATION, "", "service"), f"{{{{service}}}} p{int(q * 100)}")
                    for q in (0.95, 0.99)
                ],
                "s",
            ),
            _panel("Targets up by service", [("sum by (service) (up)", "{{service}}")]),
            _panel(
                "SLO: failed share (5m and 1h windows of the burn-rate alerts)",
                [(f'{ERROR_RATIO}:rate{w}{{route=~"$route"}}', f"{{{{route}}}} {w}") for w in ("5m", "1h")],
                "percentunit",
            ),
            _panel(
                "SLO: share slower than the p95 / p99 bound (5m)",
                [(f'{SLOW_RATIO}:rate5m{{route=~"$route"}}', "{{route}} over the p{{quantile}} bound")],
                "percentunit",
            ),
        ],
        [
            _variable(
                "route",
                f"label_values({ERROR_RATIO}:rate5m, route)",
                multi=True,
                include_all=True,
                default="$__all",
            )
        ],
        "Routes measured at the serving workload (a pipeline's business API, a model's servers), the same "
        "series the SLO alerts read: local stack and cluster alike.",
    )


def model_serving(spec: MeshSpec) -> dict:
    sel = 'model=~"$model",version=~"$version"'
    return _dashboard(
        "meshserve-model-serving",
        "meshserve / model serving",
        [
            _panel(
                "Requests by version and outcome",
                [
                    (
                        f"sum by (version, outcome) (rate({names.INFERENCE_REQUESTS}{{{sel}}}[{RI}]))",
                        "v{{version}} {{outcome}}",
                    )
                ],
                "reqps",
            ),
            _panel(
                "Queue time vs compute time (p95)",
                [
                    (_quantile(0.95, names.INFERENCE_QUEUE_DURATION, sel, "version"), "v{{version}} queue"),
                    (_quantile(0.95, names.INFERENCE_COMPUTE_DURATION, sel, "version"), "v{{version}} compute"),
                ],
                "s",
            ),
            _panel(
                "Request latency (p50 / p95 / p99)",
                [
                    (
                        _quantile(q, names.INFERENCE_DURATION, sel, "version"),
                        f"v{{{{version}}}} p{int(q * 100)}",
                    )
                    for q in (0.5, 0.95, 0.99)
                ],
                "s",
            ),
            _panel(
                "Batch size distribution",
                [(f"sum by (le) (increase({names.INFERENCE_BATCH_SIZE}_bucket{{{sel}}}[{RI}]))", "{{le}}")],
                kind="heatmap",
            ),
            _panel(
                "Request latency distribution",
                [(f"sum by (le) (increase({names.INFERENCE_DURATION}_bucket{{{sel}}}[{RI}]))", "{{le}}")],
                "s",
                kind="heatmap",
            ),
            _panel(
                "Mean batch size (inferences / executions)",
                [
                    (
                        f"sum by (version) (rate({names.INFERENCE_COUNT}{{{sel}}}[{RI}]))"
                        f" / sum by (version) (rate({names.INFERENCE_EXEC_COUNT}{{{sel}}}[{RI}]))",
                        "v{{version}}",
                    )
                ],
            ),
            _panel(
                "In flight and queued",
                [
                    (f"sum by (version) ({names.INFERENCE_IN_FLIGHT}{{{sel}}})", "v{{version}} in flight"),
                    (f"sum by (version) ({names.INFERENCE_QUEUE_DEPTH}{{{sel}}})", "v{{version}} queued"),
                ],
            ),
            _panel(
                "Model state",
                [(f"sum by (version, state) ({names.MODEL_STATE}{{{sel}}} == 1)", "v{{version}} {{state}}")],
                kind="state-timeline",
            ),
            _panel(
                "Execution providers in use (a GPU version showing only CPU computes on the CPU)",
                [
                    (
                        f"sum by (version, provider) ({names.MODEL_EXECUTION_PROVIDER}{{{sel}}})",
                        "v{{version}} {{provider}}",
                    )
                ],
                kind="state-timeline",
            ),
        ],
        [
            _variable("model", f"label_values({names.INFERENCE_REQUESTS}, model)", default=next(iter(spec.models))),
            _variable(
                "version",
                f'label_values({names.INFERENCE_REQUESTS}{{model="$model"}}, version)',
                multi=True,
                include_all=True,
                default="$__all",
            ),
        ],
    )


def canary_comparison(spec: MeshSpec) -> dict:
    """Stable against canary. The two version variables default to the spec's stable and canary, and the
    canary's values exclude the stable one, so the dashboard never opens comparing a version with itself."""
    model, stable, canary = canary_pair(spec)

    def sel(v: str) -> str:
        return f'model="$model",version="${v}"'

    def both(build) -> list[tuple[str, str]]:
        return [(build(v), f"{v} v${v}") for v in ("stable", "canary")]

    def err(v: str) -> str:  # the figure canary analysis gates on (mesh/canary_analysis.py)
        return promql.version_error_ratio("$model", f"${v}", RI)

    mirror = promql.mirror_pair("$model", "$stable", "$canary")
    return _dashboard(
        "meshserve-canary",
        "meshserve / canary comparison",
        [
            _panel(
                "Traffic share vs configured weight (shares include mirrored calls)",
                [
                    *both(
                        lambda v: (
                            f"sum(rate({names.INFERENCE_REQUESTS}{{{sel(v)}}}[{RI}]))"
                            f' / scalar(sum(rate({names.INFERENCE_REQUESTS}{{model="$model"}}[{RI}])))'
                        )
                    ),
                    *[
                        (
                            f"max({names.PIPELINE_TRAFFIC_WEIGHT}{{{sel(v)}}})",
                            f"{v} v${v} configured weight (local stack)",
                        )
                        for v in ("stable", "canary")
                    ],
                ],
                "percentunit",
            ),
            _panel("Error rate (error, rejected, timeout share)", both(err), "percentunit"),
            _panel("p95 latency", both(lambda v: promql.version_latency_quantile("$model", f"${v}", 0.95, RI)), "s"),
            _panel("p99 latency", both(lambda v: promql.version_latency_quantile("$model", f"${v}", 0.99, RI)), "s"),
            _panel(
                "Top-1 agreement of mirrored answers (local stack: gateway and business APIs compare)",
                [
                    (
                        _ratio(
                            f'rate({{{mirror},agree="true"}}[{RI}])',
                            f"rate({{{mirror}}}[{RI}])",
                            "model",
                        ),
                        "agreement",
                    )
                ],
                "percentunit",
            ),
            _panel(
                "Mirrored requests by outcome (local stack: gateway and business APIs)",
                [
                    (
                        _events(
                            f"sum by (outcome) (rate({{{promql.MIRROR_REQUESTS},"
                            f'model="$model",version=~"$stable|$canary"}}[{RI}]))'
                        ),
                        "{{outcome}}",
                    )
                ],
                "reqps",
            ),
            _panel(
                "Canary step: the canary's configured weight (local stack)",
                [(f"max({names.PIPELINE_TRAFFIC_WEIGHT}{{{sel('canary')}}})", "v$canary weight")],
                "percentunit",
            ),
        ],
        [
            _variable("model", f"label_values({names.INFERENCE_REQUESTS}, model)", default=model),
            _variable(
                "stable", f'label_values({names.INFERENCE_REQUESTS}{{model="$model"}}, version)', default=str(stable)
            ),
            _variable(
                "canary",
                f'label_values({names.INFERENCE_REQUESTS}{{model="$model",version!="$stable"}}, version)',
                default=str(canary),
            ),
        ],
        "Stable against canary, read at the model servers (local stack and cluster alike); opens on the spec's "
        "stable and canary. The mirror panels come from the local stack's embedded gateway and business APIs "
        "(both compare answers); on a cluster Istio mirrors without comparing answers.",
    )


def gateway() -> dict:
    requests = names.GATEWAY_REQUESTS
    return _dashboard(
        "meshserve-gateway",
        "meshserve / gateway (local stack: embedded gateway)",
        [
            _panel(
                "Requests by route and version",
                [
                    (
                        f'sum by (route, version) (rate({requests}{{route=~"$route",version!=""}}[{RI}]))',
                        "{{route}} v{{version}}",
                    )
                ],
                "reqps",
            ),
            _panel(
                "Requests by route and code",
                [
                    (
                        f'sum by (route, code) (rate({requests}{{route=~"$route"}}[{RI}]))',
                        "{{route}} {{code}}",
                    )
                ],
                "reqps",
            ),
            _panel(
                "Requests by upstream version",
                [
                    (
                        f'sum by (upstream, version) (rate({requests}{{route=~"$route"}}[{RI}]))',
                        "{{upstream}} v{{version}}",
                    )
                ],
                "reqps",
            ),
            _panel(
                "Rate-limited (429) by consumer",
                [(_events(f"sum by (consumer) (rate({names.GATEWAY_RATE_LIMITED}[{RI}]))"), "{{consumer}}")],
                "reqps",
            ),
            _panel(
                "Retries by upstream",
                [(_events(f"sum by (upstream) (rate({names.GATEWAY_RETRIES}[{RI}]))"), "{{upstream}}")],
                "reqps",
            ),
            _panel(
                "Outlier ejections",
                [
                    (_events(f"sum by (upstream) (increase({names.GATEWAY_EJECTIONS}[{RI}]))"), "{{upstream}}"),
                    (_events(f"sum by (upstream) ({names.GATEWAY_EJECTED})"), "{{upstream}} ejected now"),
                ],
            ),
            _panel(
                "Rejected (pending overflow, no healthy host)",
                [
                    (
                        _events(f"sum by (upstream, reason) (rate({names.GATEWAY_REJECTED}[{RI}]))"),
                        "{{upstream}} {{reason}}",
                    )
                ],
                "reqps",
            ),
            _panel(
                "Mirrored requests",
                [
                    (
                        _events(f"sum by (model, version, outcome) (rate({names.GATEWAY_MIRROR_REQUESTS}[{RI}]))"),
                        "{{model}} v{{version}} {{outcome}}",
                    )
                ],
                "reqps",
            ),
            _panel(
                "Gateway latency p95 by route",
                [(_quantile(0.95, names.GATEWAY_DURATION, 'route=~"$route"', "route"), "{{route}}")],
                "s",
            ),
        ],
        [
            _variable(
                "route",
                f"label_values({requests}, route)",
                multi=True,
                include_all=True,
                default="$__all",
            )
        ],
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
            _variable("model", f"label_values({names.INFERENCE_REQUESTS}, model)"),
        ],
    )


BUILDERS: dict[str, Callable[[MeshSpec], dict]] = {
    "service-overview": service_overview,
    "model-serving": model_serving,
    "canary-comparison": canary_comparison,
    "gateway": lambda _spec: gateway(),
    "cluster-edge": lambda _spec: cluster_edge(),
    "gpu-dcgm": lambda _spec: gpu(),
}


def build(spec: MeshSpec) -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON model: what Grafana imports and what the local console draws."""
    return {f"{name}.json": builder(spec) for name, builder in BUILDERS.items()}
