"""prometheus-operator and Grafana objects: a ServiceMonitor per workload Service, the SLO alert rules
(observability/alerts.py) as a PrometheusRule, and the dashboards (observability/dashboards/) as
ConfigMaps that Grafana's sidecar picks up by the `grafana_dashboard` label.

With Istio, the ServiceMonitors scrape the istio-agent's merged endpoint (:15020/stats/prometheus,
app metrics + Envoy's, plain HTTP outside STRICT mTLS); without it, the app's /metrics directly.
"""

from __future__ import annotations

import json
from typing import Any

from mesh.compile.names import METRICS_PORT_NAME, Workload, common_labels, namespace, version_replicas, workloads
from mesh.compile.settings import Environment
from mesh.spec import MeshSpec

MONITORING = "monitoring.coreos.com/v1"
DASHBOARD_LABEL = "grafana_dashboard"


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


def minimum_replicas(spec: MeshSpec, env: Environment) -> dict[tuple[str, int], int]:
    """(model, version) -> the replicas the stack runs at least: its overrides of the spec, which are
    also KEDA's minReplicaCount (mesh/compile/keda.py). 0 means the version runs no pod here."""
    return {(model, v): n for model in spec.models for v, n in version_replicas(model, spec, env).items()}


def prometheus_rule(spec: MeshSpec, env: Environment) -> dict[str, Any]:
    from observability.alerts import rule_groups  # lazy: observability is another owner's package

    return {
        "apiVersion": MONITORING,
        "kind": "PrometheusRule",
        "metadata": {"name": "meshserve-slos", "namespace": namespace(spec, env), "labels": common_labels("alerts")},
        "spec": {"groups": rule_groups(spec, replicas=minimum_replicas(spec, env))},
    }


def dashboard_config_maps(env: Environment) -> list[dict[str, Any]]:
    from observability.dashboards import load_dashboards

    out = []
    for filename, dashboard in load_dashboards().items():
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
    return [*monitors, prometheus_rule(spec, env), *dashboard_config_maps(env)]
