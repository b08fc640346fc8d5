"""The gateway: Kong Ingress Controller (chart kong/ingress) with its proxy inside the mesh, and the
key-auth/rate-limiting plugins, consumers, key Secrets (Pulumi secrets) and Ingress from the spec."""

from __future__ import annotations

from typing import Any

import pulumi

from infra import charts
from infra.config import Secrets, api_key
from infra.objects import apply_object, apply_objects, release
from mesh.compile import kong
from mesh.compile.names import common_labels
from mesh.compile.settings import Environment
from mesh.spec import MeshSpec

KONG_NAMESPACE = kong.KONG_NAMESPACE


# The proxy Service's type where the cluster has no load balancer: Helm's --wait (Pulumi's Release waits)
# counts a LoadBalancer Service ready only once it has an external address, which plain kind, k3d
# without its servicelb, and minikube without `minikube tunnel` never give: the release would roll back.
NO_LB_PROXY_TYPE = "NodePort"


def kong_values(env: Environment) -> dict[str, Any]:
    """Only what differs from the chart's defaults (ingressClass `kong` and proxy type LoadBalancer are)."""
    values: dict[str, Any] = {
        "gateway": {
            "podAnnotations": {
                # The proxy's sidecar carries the mesh identity (AuthorizationPolicies name it) and
                # routes to Service hosts; inbound client traffic stays outside the mesh.
                "sidecar.istio.io/inject": "true",
                "traffic.sidecar.istio.io/includeInboundPorts": "",
            },
        },
    }
    if not env.cluster.has_load_balancer:
        values["gateway"]["proxy"] = {"type": NO_LB_PROXY_TYPE}
    if env.platform.logging:  # the opentelemetry plugin (mesh/compile/kong.py) needs Kong's tracing on
        values["gateway"]["env"] = {"tracing_instrumentations": "all", "tracing_sampling_rate": 1.0}
    return values


class Gateway(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        spec: MeshSpec,
        env: Environment,
        kong_objects: list[dict[str, Any]],
        secrets: Secrets,
        ready: list[pulumi.Resource],
        opts: pulumi.ResourceOptions,
    ) -> None:
        super().__init__("meshserve:infra:Gateway", name, None, opts)
        labels = {**common_labels("gateway")}
        if env.platform.istio:
            labels["istio-injection"] = "enabled"
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KONG_NAMESPACE, "labels": labels}}
        self.namespace = apply_object(namespace, pulumi.ResourceOptions(parent=self, depends_on=ready))
        c = charts.KONG
        self.chart = release(
            "kong",
            c.chart,
            c.version,
            c.repo,
            KONG_NAMESPACE,
            kong_values(env),
            pulumi.ResourceOptions(parent=self, depends_on=[self.namespace, *ready]),
        )
        after = pulumi.ResourceOptions(parent=self, depends_on=[self.chart, *ready])
        self.secrets = [
            apply_object(kong.consumer_secret(c, spec, env, api_key(secrets, c.username)), after)
            for c in spec.gateway.consumers
        ]
        if env.platform.logging:
            assert secrets.apm_token is not None
            config = pulumi.Output.secret(secrets.apm_token.apply(lambda token: kong.tracing_config(env, token)))
            self.secrets.append(apply_object(kong.tracing_secret(config), after))
        self.objects = apply_objects(
            kong_objects, pulumi.ResourceOptions(parent=self, depends_on=[self.chart, *ready, *self.secrets])
        )
        self.register_outputs({})
