"""Workloads: per model version, pipeline stage and business API a ServiceAccount, Deployment,
Service and PodDisruptionBudget, plus the spec/discovery ConfigMap (all from mesh/compile/k8s.py)."""

from __future__ import annotations

from typing import Any

import pulumi

from infra.objects import apply_objects


class Workloads(pulumi.ComponentResource):
    def __init__(
        self, name: str, objects: list[dict[str, Any]], ready: list[pulumi.Resource], opts: pulumi.ResourceOptions
    ) -> None:
        super().__init__("meshserve:infra:Workloads", name, None, opts)
        self.objects = apply_objects(objects, pulumi.ResourceOptions(parent=self, depends_on=ready))
        self.deployments = [r for r, o in zip(self.objects, objects, strict=True) if o["kind"] == "Deployment"]
        self.register_outputs({})
