"""prometheus-operator and Grafana objects: a ServiceMonitor per workload Service, the SLO alert rules
(mesh/compile/alerts.py) as a PrometheusRule, and the dashboards (mesh/compile/dashboards.py, built
from the same spec) as ConfigMaps that Grafana's sidecar picks up by the `grafana_dashboard` label.

With Istio, the ServiceMonitors scrape the istio-agent's merged endpoint (:15020/stats/prometheus,
app metrics + Envoy's, plain HTTP outside STRICT mTLS); without it, the app's /metrics directly.

Kong's proxy pods carry a sidecar too: its `istio_requests_total{reporter="source"}` is what the
cluster-edge dashboard reads. The Kong chart has no Service on :15020, so a headless one in the `kong`
namespace selects the proxy pods for a ServiceMonitor there (a ServiceMonitor, not a PodMonitor: the
ServiceMonitor CRD is the one the tests hold objects against).
"""

from __future__ import annotations

import json
from typing import Any

from mesh.compile.alerts import rule_groups
from mesh.compile.dashboards import build as build_dashboards
from mesh.compile.kong import KONG_NAMESPACE
from mesh.compile.names import (
    ISTIO_MERGED_METRICS_PORT,
    METRICS_PORT_NAME,
    Workload,
    common_labels,
    namespace,
    version_replicas,
    workloads,
)
from mesh.compile.settings import Environment
from mesh.spec import MeshSpec

MONITORING = "monitoring.coreos.com/v1"
DASHBOARD_LABEL = "grafana_dashboard"
KONG_SIDECAR_METRICS = "kong-gateway-sidecar-metrics"
# The proxy pods of the Kong release (infra/gateway.py: release `kong`, chart `ingress`, subchart `gateway`).
KONG_PROXY_SELECTOR = {"app.kubernetes.io/instance": "kong", "app.kubernetes.io/name": "gateway"}


def metrics_path(env: Environment) -> str:
    return "/stats/prometheus" if env.platform.istio else "/metrics"


def service_monitor(w: Workload, spec: MeshSpec, env: Environment) -> dict[str, Any]:
    return {
        "apiVersion": MONITORING,
        "kind": "ServiceMonitor",
        "metadata": {"name": w.name, "namespace": namespace(spec, env), "labels": w.labels},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": w.name}},
            # honorLabels: the services' own `service`/`version` labels win over the target's, as in the
            # local Prometheus config, so dashboards and alerts read the same series everywhere.
            "endpoints": [
                {"port": METRICS_PORT_NAME, "path": metrics_path(env), "interval": "15s", "honorLabels": True}
            ],
        },
    }


def kong_sidecar_metrics() -> list[dict[str, Any]]:
    """A headless Service on the Kong proxy pods' istio-agent port and the ServiceMonitor that scrapes it."""
    labels = {**common_labels("gateway"), "app.kubernetes.io/name": KONG_SIDECAR_METRICS}
    meta = {"name": KONG_SIDECAR_METRICS, "namespace": KONG_NAMESPACE, "labels": labels}
    port = {"name": METRICS_PORT_NAME, "port": ISTIO_MERGED_METRICS_PORT, "targetPort": ISTIO_MERGED_METRICS_PORT}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {"clusterIP": "None", "selector": dict(KONG_PROXY_SELECTOR), "ports": [{**port, "protocol": "TCP"}]},
    }
    monitor = {
        "apiVersion": MONITORING,
        "kind": "ServiceMonitor",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": KONG_SIDECAR_METRICS}},
            "endpoints": [
                {"port": METRICS_PORT_NAME, "path": "/stats/prometheus", "interval": "15s", "honorLabels": True}
            ],
        },
    }
    return [service, monitor]


def minimum_replicas(spec: MeshSpec, env: Environment) -> dict[tuple[str, int], int]:
    """(model, version) -> the replicas the stack runs at least: its overrides of the spec, which are
    also KEDA's minReplicaCount (mesh/compile/keda.py). 0 means the version runs no pod here."""
    return {(model, v): n for model in spec.models for v, n in version_replicas(model, spec, env).items()}


def prometheus_rule(spec: MeshSpec, env: Environment) -> dict[str, Any]:
    return {
        "apiVersion": MONITORING,
        "kind": "PrometheusRule",
        "metadata": {"name": "meshserve-slos", "namespace": namespace(spec, env), "labels": common_labels("alerts")},
        "spec": {"groups": rule_groups(spec, replicas=minimum_replicas(spec, env))},
    }


def dashboard_config_maps(spec: MeshSpec, env: Environment) -> list[dict[str, Any]]:
    """The spec's dashboards (its routes, its stable and canary), one ConfigMap each."""
    out = []
    for filename, dashboard in sorted(build_dashboards(spec).items()):  # by file name, as on disk
        stem = filename.removesuffix(".json")
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": f"meshserve-dashboard-{stem}",
                    "namespace": env.monitoring_namespace,
                    "labels": {**common_labels("dashboards"), DASHBOARD_LABEL: "1"},
                },
                "data": {filename: json.dumps(dashboard, indent=1, sort_keys=True)},
            }
        )
    return out


def compile_monitoring(spec: MeshSpec, env: Environment) -> list[dict[str, Any]]:
    monitors = [service_monitor(w, spec, env) for w in workloads(spec, env)]
    edge = kong_sidecar_metrics() if env.platform.kong and env.platform.istio else []
    return [*monitors, *edge, prometheus_rule(spec, env), *dashboard_config_maps(spec, env)]
