"""PromQL building blocks shared by the alert rules, the dashboards' tests and canary analysis.

One place names the metrics and the label matchers, so a rename touches one file. SLIs for a
route are measured at the edge (the gateway: what users see); per-version figures come from the
model servers (every request reaches one, whether through a pipeline or direct v2 access).
"""

from __future__ import annotations

# --- metric names (the contracts in notes/local-stack.md; catalog in observability/METRICS.md)
GATEWAY_REQUESTS = "meshserve_gateway_requests_total"
GATEWAY_DURATION = "meshserve_gateway_request_duration_seconds"
GATEWAY_MIRROR_AGREEMENT = "meshserve_gateway_mirror_agreement_total"
INFERENCE_REQUESTS = "meshserve_inference_requests_total"
INFERENCE_DURATION = "meshserve_inference_request_duration_seconds"
ERROR_CODES = "5.."


def quote(value: str) -> str:
    """A PromQL string literal (label values with quotes or backslashes stay exact)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def le_label(seconds: float) -> str:
    """The `le` label prometheus-client writes for a bucket bound (Go's float formatting)."""
    text = repr(float(seconds))
    return text[:-2] if text.endswith(".0") else text


# --------------------------------------------------------------------------- route SLIs (gateway)


def route_error_ratio(route: str, window: str) -> str:
    """Share of the route's requests answered 5xx over `window` (NaN without traffic)."""
    sel = f"route={quote(route)}"
    errors = f'sum(rate({GATEWAY_REQUESTS}{{{sel},code=~"{ERROR_CODES}"}}[{window}]))'
    return f"({errors} or vector(0)) / sum(rate({GATEWAY_REQUESTS}{{{sel}}}[{window}]))"


def route_slow_ratio(route: str, threshold_s: float, window: str) -> str:
    """Share of the route's requests slower than `threshold_s` (needs a bucket at that bound)."""
    sel = f"route={quote(route)}"
    return (
        f"1 - sum(rate({GATEWAY_DURATION}_bucket{{{sel},le={quote(le_label(threshold_s))}}}[{window}]))"
        f" / sum(rate({GATEWAY_DURATION}_count{{{sel}}}[{window}]))"
    )


def route_latency_quantile(route: str, quantile: float, window: str) -> str:
    return (
        f"histogram_quantile({quantile}, sum by (le) "
        f"(rate({GATEWAY_DURATION}_bucket{{route={quote(route)}}}[{window}])))"
    )


# --------------------------------------------------------------------------- per model version


def version_selector(model: str, version: int | str) -> str:
    return f"model={quote(model)},version={quote(str(version))}"


def version_error_ratio(model: str, version: int | str, window: str) -> str:
    """Share of a version's inference requests that failed on the server side."""
    sel = version_selector(model, version)
    failed = f'sum(rate({INFERENCE_REQUESTS}{{{sel},outcome!="success"}}[{window}]))'
    return f"({failed} or vector(0)) / sum(rate({INFERENCE_REQUESTS}{{{sel}}}[{window}]))"


def version_latency_quantile(model: str, version: int | str, quantile: float, window: str) -> str:
    sel = version_selector(model, version)
    return f"histogram_quantile({quantile}, sum by (le) (rate({INFERENCE_DURATION}_bucket{{{sel}}}[{window}])))"


def version_requests(model: str, version: int | str, window: str) -> str:
    return f"sum(increase({INFERENCE_REQUESTS}{{{version_selector(model, version)}}}[{window}]))"


def version_request_rate(model: str, version: int | str, window: str) -> str:
    return f"sum(rate({INFERENCE_REQUESTS}{{{version_selector(model, version)}}}[{window}]))"


def _mirror_pair(model: str, a: int | str, b: int | str) -> str:
    """Both directions: the primary may be either version (a canary at 100% mirrors to the stable)."""
    pair = f"{a}|{b}"
    return f'model={quote(model)},primary=~"{pair}",mirror=~"{pair}"'


def mirror_agreement(model: str, a: int | str, b: int | str, window: str) -> str:
    """Top-1 agreement between two versions on mirrored inputs (empty until a mirror is compared)."""
    sel = _mirror_pair(model, a, b)
    compared = f"sum(increase({GATEWAY_MIRROR_AGREEMENT}{{{sel}}}[{window}]))"
    agreed = f'sum(increase({GATEWAY_MIRROR_AGREEMENT}{{{sel},agree="true"}}[{window}]))'
    return f"({agreed} or {compared} * 0) / {compared}"  # all disagreeing reads 0, not empty


def mirror_compared(model: str, a: int | str, b: int | str, window: str) -> str:
    return f"sum(increase({GATEWAY_MIRROR_AGREEMENT}{{{_mirror_pair(model, a, b)}}}[{window}]))"


def service_up(service: str) -> str:
    """Healthy scrape targets of one service (0 when none, never an empty vector)."""
    return f"sum(up{{service={quote(service)}}}) or vector(0)"
