"""Monitoring: kube-prometheus-stack (Prometheus, Alertmanager, Grafana), then the ServiceMonitors,
the SLO PrometheusRule and the dashboard ConfigMaps compiled from the spec and observability/."""

from __future__ import annotations

from typing import Any

import pulumi

from infra import charts
from infra.objects import apply_object, apply_objects, release
from mesh.compile.names import common_labels
from mesh.compile.settings import Environment

GRAFANA_ADMIN_SECRET = "grafana-admin"


def kps_values() -> dict[str, Any]:
    """Only what differs from the chart's defaults: its Grafana already reads `admin-user`/`admin-password`
    from the admin Secret and runs the dashboard sidecar on label `grafana_dashboard: "1"` in ALL namespaces
    (mesh/compile/monitoring.py's ConfigMaps carry that label)."""
    return {
        "fullnameOverride": "kps",  # Prometheus at kps-prometheus.<ns>:9090 (KEDA's serverAddress)
        "grafana": {"admin": {"existingSecret": GRAFANA_ADMIN_SECRET}},
        "prometheus": {
            "prometheusSpec": {
                # Select every ServiceMonitor/PodMonitor/PrometheusRule, not only the chart's own release label.
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "podMonitorSelectorNilUsesHelmValues": False,
                "ruleSelectorNilUsesHelmValues": False,
                "retention": "15d",
            }
        },
    }


class Monitoring(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        env: Environment,
        objects: list[dict[str, Any]],
        grafana_password: pulumi.Output,
        ready: list[pulumi.Resource],
        opts: pulumi.ResourceOptions,
    ) -> None:
        super().__init__("meshserve:infra:Monitoring", name, None, opts)
        ns = env.monitoring_namespace
        labels = common_labels("monitoring")
        self.namespace = apply_object(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}},
            pulumi.ResourceOptions(parent=self),
        )
        self.admin_secret = apply_object(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": GRAFANA_ADMIN_SECRET, "namespace": ns, "labels": labels},
                "type": "Opaque",
                "stringData": {"admin-user": "admin", "admin-password": grafana_password},
            },
            pulumi.ResourceOptions(parent=self, depends_on=[self.namespace]),
        )
        c = charts.KUBE_PROMETHEUS_STACK
        self.chart = release(
            "kps",
            c.chart,
            c.version,
            c.repo,
            ns,
            kps_values(),
            pulumi.ResourceOptions(parent=self, depends_on=[self.admin_secret]),
        )
        self.objects = apply_objects(objects, pulumi.ResourceOptions(parent=self, depends_on=[self.chart, *ready]))
        self.register_outputs({})
