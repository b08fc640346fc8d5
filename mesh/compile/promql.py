"""PromQL building blocks shared by the alert rules, the dashboards and canary analysis.

One place builds the label matchers and the SLI expressions over the metric names (spelled once, in
services/common/metric_names.py), so the alerts, the dashboards and the canary gates read the same
series. Every SLI is measured at the serving workload, the way Istio's `reporter="destination"`
metrics are: the same code runs locally and on a cluster, so one set of queries serves both (the
embedded gateway runs only locally; on a cluster Kong is the edge). A pipeline route is measured by
its business API's HTTP metrics; a direct model route `/v2/models/<m>/infer` by the model servers'
inference metrics, summed over versions. Per-version figures come from the model servers too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.common.metric_names import (
    GATEWAY_MIRROR_AGREEMENT,
    GATEWAY_MIRROR_REQUESTS,
    HTTP_DURATION,
    HTTP_REQUESTS,
    INFERENCE_DURATION,
    INFERENCE_REQUESTS,
    PIPELINE_MIRROR_AGREEMENT,
    PIPELINE_MIRROR_REQUESTS,
)

if TYPE_CHECKING:
    from mesh.spec import MeshSpec

# Both comparers count rows with the same labels: one selector reads them together, so agreement exists
# whichever route (direct /v2 through the gateway, or a pipeline's business route) carries the traffic.
MIRROR_AGREEMENT = f'__name__=~"{GATEWAY_MIRROR_AGREEMENT}|{PIPELINE_MIRROR_AGREEMENT}"'
MIRROR_REQUESTS = f'__name__=~"{GATEWAY_MIRROR_REQUESTS}|{PIPELINE_MIRROR_REQUESTS}"'  # and their shadow calls
ERROR_CODES = "5.."
# Outcomes that count against a model route's availability: server errors, timeouts (504) and
# shed requests (503), as Istio counts every 5xx. The model server also files a 4xx decode error of
# a known model under `error` (services/modelserver/app.py): counted too, see METRICS.md.
FAILED_OUTCOMES = "error|rejected|timeout"


def quote(value: str) -> str:
    """A PromQL string literal (label values with quotes or backslashes stay exact)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def le_label(seconds: float) -> str:
    """The `le` label prometheus-client writes for a bucket bound (Go's float formatting)."""
    text = repr(float(seconds))
    return text[:-2] if text.endswith(".0") else text


# --------------------------------------------------------------------------- route SLIs (workload)


@dataclass(frozen=True)
class RouteSLI:
    """Where one route's SLI is read: a request counter and a duration histogram of the workload
    that serves the route, the matchers that pick the route's requests, and those that pick failures."""

    route: str
    requests: str
    duration: str
    selector: str
    failed: str
    source: str  # the workload, for descriptions: "business API digits-classify", "model servers of digits"


def route_sli(spec: MeshSpec, route: str) -> RouteSLI:
    """The SLI source of a pipeline route (its business API) or of `/v2/models/<model>/infer`."""
    for name, pipeline in spec.pipelines.items():
        if pipeline.route == route:
            return RouteSLI(
                route,
                HTTP_REQUESTS,
                HTTP_DURATION,
                f"service={quote(name)},route={quote(route)}",
                f'code=~"{ERROR_CODES}"',
                f"business API {name}",
            )
    parts = route.strip("/").split("/")
    if len(parts) == 4 and parts[:2] == ["v2", "models"] and parts[3] == "infer" and parts[2] in spec.models:
        return RouteSLI(
            route,
            INFERENCE_REQUESTS,
            INFERENCE_DURATION,
            f"model={quote(parts[2])}",
            f'outcome=~"{FAILED_OUTCOMES}"',
            f"model servers of {parts[2]}",
        )
    raise ValueError(f"{route!r} is neither a pipeline route nor /v2/models/<model>/infer of this spec")


def route_error_ratio(sli: RouteSLI, window: str) -> str:
    """Share of the route's requests that failed over `window` (NaN without traffic)."""
    failed = f"sum(rate({sli.requests}{{{sli.selector},{sli.failed}}}[{window}]))"
    return f"({failed} or vector(0)) / sum(rate({sli.requests}{{{sli.selector}}}[{window}]))"


def route_slow_ratio(sli: RouteSLI, threshold_s: float, window: str) -> str:
    """Share of the route's requests slower than `threshold_s` (needs a bucket at that bound)."""
    under = f"sum(rate({sli.duration}_bucket{{{sli.selector},le={quote(le_label(threshold_s))}}}[{window}]))"
    return f"1 - {under} / sum(rate({sli.duration}_count{{{sli.selector}}}[{window}]))"


def route_latency_quantile(sli: RouteSLI, quantile: float, window: str) -> str:
    return f"histogram_quantile({quantile}, sum by (le) (rate({sli.duration}_bucket{{{sli.selector}}}[{window}])))"


def route_request_rate(sli: RouteSLI, window: str) -> str:
    return f"sum(rate({sli.requests}{{{sli.selector}}}[{window}]))"


def route_series_absent(sli: RouteSLI) -> str:
    """Non-empty while the workload exports no request series for the route (a broken scrape, a
    renamed metric, or no request since the workload started): the SLI cannot be measured."""
    return f"absent({sli.requests}{{{sli.selector}}})"


# --------------------------------------------------------------------------- per model version


def version_selector(model: str, version: int | str) -> str:
    return f"model={quote(model)},version={quote(str(version))}"


def version_error_ratio(model: str, version: int | str, window: str) -> str:
    """Share of a version's inference requests that failed (the outcomes a model route's SLI counts)."""
    sel = version_selector(model, version)
    failed = f'sum(rate({INFERENCE_REQUESTS}{{{sel},outcome=~"{FAILED_OUTCOMES}"}}[{window}]))'
    return f"({failed} or vector(0)) / sum(rate({INFERENCE_REQUESTS}{{{sel}}}[{window}]))"


def version_latency_quantile(model: str, version: int | str, quantile: float, window: str) -> str:
    sel = version_selector(model, version)
    return f"histogram_quantile({quantile}, sum by (le) (rate({INFERENCE_DURATION}_bucket{{{sel}}}[{window}])))"


def version_requests(model: str, version: int | str, window: str) -> str:
    return f"sum(increase({INFERENCE_REQUESTS}{{{version_selector(model, version)}}}[{window}]))"


def version_request_rate(model: str, version: int | str, window: str) -> str:
    return f"sum(rate({INFERENCE_REQUESTS}{{{version_selector(model, version)}}}[{window}]))"


def mirror_pair(model: str, a: int | str, b: int | str) -> str:
    """Both comparers, both directions: the primary may be either version (a canary at 100% mirrors to
    the stable). Template variables ($stable) work as values too."""
    pair = f"{a}|{b}"
    return f'{MIRROR_AGREEMENT},model={quote(model)},primary=~"{pair}",mirror=~"{pair}"'


def mirror_agreement(model: str, a: int | str, b: int | str, window: str) -> str:
    """Top-1 agreement between two versions on mirrored inputs (empty until a mirror is compared)."""
    sel = mirror_pair(model, a, b)
    compared = f"sum(increase({{{sel}}}[{window}]))"
    agreed = f'sum(increase({{{sel},agree="true"}}[{window}]))'
    return f"({agreed} or {compared} * 0) / {compared}"  # all disagreeing reads 0, not empty


def mirror_compared(model: str, a: int | str, b: int | str, window: str) -> str:
    return f"sum(increase({{{mirror_pair(model, a, b)}}}[{window}]))"


def service_up(service: str) -> str:
    """Healthy scrape targets of one service (0 when none, never an empty vector)."""
    return f"sum(up{{service={quote(service)}}}) or vector(0)"
