"""The mesh: Istio's `base` (CRDs) and `istiod` charts, the workload namespace with sidecar injection,
mTLS STRICT and the AuthorizationPolicies (from mesh/compile/istio.py); then, as TrafficPolicies, the
VirtualServices and DestinationRules compiled from the spec."""

from __future__ import annotations

from typing import Any

import pulumi

from infra import charts
from infra.objects import apply_object, apply_objects, release
from mesh.compile.settings import Environment

ISTIO_NAMESPACE = "istio-system"
SECURITY_KINDS = ("PeerAuthentication", "AuthorizationPolicy")


class Mesh(pulumi.ComponentResource):
    """`ready` lists what workloads must wait for: the namespace, and istiod (sidecar injection)."""

    def __init__(
        self,
        name: str,
        env: Environment,
        namespace: dict[str, Any],
        istio_objects: list[dict[str, Any]],
        opts: pulumi.ResourceOptions,
    ) -> None:
        super().__init__("meshserve:infra:Mesh", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.charts: list[pulumi.Resource] = []
        if env.platform.istio:
            b, d = charts.ISTIO_BASE, charts.ISTIOD
            base = release("istio-base", b.chart, b.version, b.repo, ISTIO_NAMESPACE, {}, child)
            # enablePrometheusMerge (the :15020 merged metrics the ServiceMonitors scrape) is the chart's default.
            istiod_values = {"meshConfig": {"accessLogFile": "/dev/stdout"}}
            istiod = release(
                "istiod",
                d.chart,
                d.version,
                d.repo,
                ISTIO_NAMESPACE,
                istiod_values,
                pulumi.ResourceOptions(parent=self, depends_on=[base]),
            )
            self.charts = [base, istiod]
        # Created after istiod so the injection webhook sees the namespace's first pods.
        self.namespace = apply_object(namespace, pulumi.ResourceOptions(parent=self, depends_on=self.charts))
        self.ready: list[pulumi.Resource] = [self.namespace, *self.charts]
        security = [o for o in istio_objects if o["kind"] in SECURITY_KINDS]
        self.security = apply_objects(security, pulumi.ResourceOptions(parent=self, depends_on=self.ready))
        self.register_outputs({})


class TrafficPolicies(pulumi.ComponentResource):
    """VirtualService (weights, header override, mirror, retries, timeout) and DestinationRule (subsets,
    connection pool, outlier detection) per host: numbers straight from mesh/mesh.yaml."""

    def __init__(
        self, name: str, mesh: Mesh, istio_objects: list[dict[str, Any]], opts: pulumi.ResourceOptions
    ) -> None:
        super().__init__("meshserve:infra:TrafficPolicies", name, None, opts)
        routing = [o for o in istio_objects if o["kind"] not in SECURITY_KINDS]
        self.objects = apply_objects(routing, pulumi.ResourceOptions(parent=self, depends_on=mesh.ready))
        self.register_outputs({})
