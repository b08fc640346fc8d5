"""Prometheus alert rules generated from the spec: SLO burn rates and model-version availability.

Multi-window, multi-burn-rate alerts as in Google's SRE workbook (ch. 5, "Alerting on SLOs"):
each alert fires only while both a long and a short window burn the budget faster than a
factor, so it pages fast on a sharp outage and stops soon after recovery. The factors are
derived from the SLO's window (2% of a 30-day budget in 1 h = 14.4x). Latency SLOs use the
same scheme on the share of requests slower than the bound: a p95 bound leaves a 5% budget.

The SLIs are read at the serving workload (mesh/compile/promql.py: a pipeline's business API,
a model's servers), so the same rules work on the local stack and on a cluster where Kong is the
edge. `MeshserveSLIMissing` fires when a route's SLI has no series at all: a broken scrape or a
renamed metric would otherwise leave the burn-rate alerts silently blind.

`rule_groups(spec, replicas)` is pure (mesh/compile/monitoring.py wraps it in a PrometheusRule and
passes the stack's effective replicas; the dashboards read its recording rules); `write_rules` is the
edge that writes a file promtool and the local Prometheus (observability/prometheus.py) read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mesh.compile import promql
from mesh.spec import SLO, MeshSpec, format_duration

ERROR_RATIO = "meshserve:slo_error_ratio"
SLOW_RATIO = "meshserve:slo_slow_ratio"
MISSING_FOR = "10m"  # a scrape may fail a few times; a quarter of an hour blind is worth a warning


@dataclass(frozen=True)
class BurnWindow:
    long: str
    short: str
    budget_share: float  # share of the whole SLO window's budget burnt within `long`
    severity: str


# The SRE workbook's table for a 30-day SLO: 2%/1h and 5%/6h page, 10%/1d and 10%/3d ticket.
BURN_WINDOWS = (
    BurnWindow("1h", "5m", 0.02, "critical"),
    BurnWindow("6h", "30m", 0.05, "critical"),
    BurnWindow("1d", "2h", 0.10, "warning"),
    BurnWindow("3d", "6h", 0.10, "warning"),
)
LATENCY_BUDGETS = (("0.95", "p95_latency"), ("0.99", "p99_latency"))
_WINDOW_SECONDS = {"m": 60, "h": 3600, "d": 86400}


def window_seconds(window: str) -> int:
    return int(window[:-1]) * _WINDOW_SECONDS[window[-1]]


def burn_factor(slo: SLO, burn: BurnWindow) -> float:
    """How many times faster than 'exactly on budget' the long window must burn to alert."""
    return round(burn.budget_share * slo.window / window_seconds(burn.long), 4)


def windows() -> list[str]:
    return sorted({w for b in BURN_WINDOWS for w in (b.long, b.short)}, key=window_seconds)


def slug(route: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", route.lower()).strip("-")


def slo_bucket_bounds(spec: MeshSpec) -> list[float]:
    """Latency bounds the route histograms must have as buckets for the latency SLIs to be exact."""
    return sorted({bound for s in spec.slos for bound in (s.p95_latency, s.p99_latency)})


# --------------------------------------------------------------------------- rules


def _recording_rules(slo: SLO, sli: promql.RouteSLI) -> list[dict[str, Any]]:
    rules = []
    for window in windows():
        rules.append(
            {
                "record": f"{ERROR_RATIO}:rate{window}",
                "expr": promql.route_error_ratio(sli, window),
                "labels": {"route": slo.route},
            }
        )
        for quantile, field in LATENCY_BUDGETS:
            rules.append(
                {
                    "record": f"{SLOW_RATIO}:rate{window}",
                    "expr": promql.route_slow_ratio(sli, getattr(slo, field), window),
                    "labels": {"route": slo.route, "quantile": quantile},
                }
            )
    return rules


def _series(record: str, window: str, labels: dict[str, str]) -> str:
    matchers = ",".join(f"{k}={promql.quote(v)}" for k, v in labels.items())
    return f"{record}:rate{window}{{{matchers}}}"


def _burn_alert(name: str, record: str, budget: float, labels: dict[str, str], slo: SLO, what: str):
    for burn in BURN_WINDOWS:
        factor = burn_factor(slo, burn)
        threshold = round(factor * budget, 6)
        long_, short = _series(record, burn.long, labels), _series(record, burn.short, labels)
        yield {
            "alert": name,
            "expr": f"{long_} > {threshold} and {short} > {threshold}",
            "labels": {
                **labels,
                "severity": burn.severity,
                "long_window": burn.long,
                "short_window": burn.short,
                "burn_rate": f"{factor:g}",
            },
            "annotations": {
                "summary": f"{slo.route}: {what} budget burning {factor:g}x too fast",
                "description": (
                    f"Over the last {burn.long} (and still over {burn.short}) the share of {what} on "
                    f"{slo.route} is above {threshold:g}, {factor:g} times the budget of {budget:g}: "
                    f"{burn.budget_share:.0%} of the {format_duration(slo.window)} budget is gone in {burn.long}."
                ),
            },
        }


def _missing_alert(slo: SLO, sli: promql.RouteSLI) -> dict[str, Any]:
    return {
        "alert": "MeshserveSLIMissing",
        "expr": promql.route_series_absent(sli),
        "for": MISSING_FOR,
        "labels": {"route": slo.route, "severity": "warning"},
        "annotations": {
            "summary": f"{slo.route}: no SLI series, its burn-rate alerts cannot fire",
            "description": (
                f"Prometheus holds no {sli.requests} series for {slo.route} (from the {sli.source}): its "
                "scrape fails, the metric was renamed, or the route has had no request since the workload started."
            ),
        },
    }


def _slo_alerts(slo: SLO, sli: promql.RouteSLI) -> list[dict[str, Any]]:
    alerts = list(
        _burn_alert(
            "MeshserveErrorBudgetBurn", ERROR_RATIO, slo.error_budget, {"route": slo.route}, slo, "failed answers"
        )
    )
    for quantile, field in LATENCY_BUDGETS:
        bound = format_duration(getattr(slo, field))
        alerts += _burn_alert(
            "MeshserveLatencyBudgetBurn",
            SLOW_RATIO,
            round(1 - float(quantile), 6),
            {"route": slo.route, "quantile": quantile},
            slo,
            f"requests slower than {bound}",
        )
    return [*alerts, _missing_alert(slo, sli)]


Replicas = Mapping[tuple[str, int], int]


def _availability_alerts(spec: MeshSpec, replicas: Replicas) -> Iterator[dict[str, Any]]:
    for model_name, model in spec.models.items():
        for version, vspec in model.versions.items():
            floor = replicas.get((model_name, version), vspec.replicas)
            if floor < 1:
                continue  # no pod is meant to run (e.g. a GPU version on a CPU-only dev cluster)
            service = f"{model_name}-v{version}"
            labels = {"model": model_name, "version": str(version), "service": service}
            up = f"({promql.service_up(service)})"
            yield {
                "alert": "MeshserveModelVersionDown",
                "expr": f"{up} < 1",
                "for": "1m",
                "labels": {**labels, "severity": "critical" if model.required else "warning"},
                "annotations": {
                    "summary": f"{service}: no replica is up",
                    "description": f"No scrape target of {service} ({model_name} v{version}) answers.",
                },
            }
            if floor > 1:
                yield {
                    "alert": "MeshserveModelVersionDegraded",
                    "expr": f"{up} < {floor}",
                    "for": "5m",
                    "labels": {**labels, "severity": "warning"},
                    "annotations": {
                        "summary": f"{service}: fewer replicas up than its minimum of {floor}",
                        "description": f"{service} runs below its minimum of {floor} replicas.",
                    },
                }


def rule_groups(spec: MeshSpec, replicas: Replicas | None = None) -> list[dict[str, Any]]:
    """Prometheus rule groups (the `groups:` list of a rules file / PrometheusRule spec).

    `replicas`: the minimum replicas each (model, version) really runs with, where that differs from
    the spec (a stack's overrides, KEDA's minReplicaCount); versions left out keep the spec's count.
    A version at 0 gets no availability alert, the Degraded threshold is the effective minimum.
    """
    groups = []
    for slo in spec.slos:
        sli = promql.route_sli(spec, slo.route)
        groups.append(
            {"name": f"meshserve-slo-{slug(slo.route)}", "rules": [*_recording_rules(slo, sli), *_slo_alerts(slo, sli)]}
        )
    groups.append({"name": "meshserve-availability", "rules": list(_availability_alerts(spec, replicas or {}))})
    return groups


def alert_signals(spec: MeshSpec) -> list[tuple[str, str]]:
    """(alert, expression) for the un-thresholded series each alert compares: these must carry
    data whenever the stack serves traffic, even while no alert fires."""
    signals: list[tuple[str, str]] = []
    for group in rule_groups(spec):
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            absent = re.fullmatch(r"absent\((.*)\)", rule["expr"])
            if absent:  # a guard: silent while its series exist, so the series must have data
                signals.append((rule["alert"], absent.group(1)))
                continue
            for part in rule["expr"].split(" and "):
                signals.append((rule["alert"], re.sub(r"\s*[<>]=?\s*[\d.e+-]+$", "", part).strip()))
    return list(dict.fromkeys(signals))


def render_rules(spec: MeshSpec, replicas: Replicas | None = None) -> str:
    return yaml.safe_dump({"groups": rule_groups(spec, replicas)}, sort_keys=False, width=1000)


def write_rules(spec: MeshSpec, path: Path, replicas: Replicas | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_rules(spec, replicas))
    return path
