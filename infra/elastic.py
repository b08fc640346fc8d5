"""Logging and tracing: the ECK operator, then Elasticsearch, Kibana, an APM Server for OTLP traces and
Filebeat for container logs (mesh/compile/logging.py); the admin password is a Pulumi secret, and so is
APM Server's token: in its keystore Secret (before the ApmServer) and, as the pods' OTLP headers, in the
workload namespace (before the workloads: `workload_secrets`)."""

from __future__ import annotations

from typing import Any

import pulumi

from infra import charts
from infra.objects import apply_object, apply_objects, release
from mesh.compile.logging import apm_token_secret, elastic_admin_secret, otlp_headers, otlp_headers_secret
from mesh.compile.settings import Environment

OPERATOR_NAMESPACE = "elastic-system"


class Logging(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        env: Environment,
        objects: list[dict[str, Any]],
        elastic_password: pulumi.Output,
        apm_token: pulumi.Output,
        workload_namespace: str,
        namespace_ready: list[pulumi.Resource],
        storage: list[pulumi.Resource],
        opts: pulumi.ResourceOptions,
    ) -> None:
        super().__init__("meshserve:infra:Logging", name, None, opts)
        c = charts.ECK_OPERATOR
        self.operator = release(
            "eck-operator", c.chart, c.version, c.repo, OPERATOR_NAMESPACE, {}, pulumi.ResourceOptions(parent=self)
        )
        plain = [o for o in objects if o["kind"] == "Namespace"]
        rest = [o for o in objects if o["kind"] != "Namespace"]
        self.namespace = apply_objects(plain, pulumi.ResourceOptions(parent=self))
        self.admin_secret = apply_object(
            elastic_admin_secret(env, elastic_password), pulumi.ResourceOptions(parent=self, depends_on=self.namespace)
        )
        self.apm_token_secret = apply_object(
            apm_token_secret(env, apm_token), pulumi.ResourceOptions(parent=self, depends_on=self.namespace)
        )
        headers = pulumi.Output.secret(apm_token.apply(otlp_headers))
        self.workload_secrets = [
            apply_object(
                otlp_headers_secret(workload_namespace, headers),
                pulumi.ResourceOptions(parent=self, depends_on=namespace_ready),
            )
        ]
        after = [self.operator, *self.namespace, self.admin_secret, self.apm_token_secret]
        # Elasticsearch's PVCs need a default StorageClass (on EKS: gp3 through the EBS CSI add-on).
        self.objects = [
            apply_object(
                o, pulumi.ResourceOptions(parent=self, depends_on=after + storage * (o["kind"] == "Elasticsearch"))
            )
            for o in rest
        ]
        self.register_outputs({})
