"""Autoscaling: KEDA, then a ScaledObject per serving model version (mesh/compile/keda.py) on the
Prometheus query of the model server's queue depth."""

from __future__ import annotations

from typing import Any

import pulumi

from infra import charts
from infra.objects import apply_objects, release


class Autoscaling(pulumi.ComponentResource):
    def __init__(
        self, name: str, objects: list[dict[str, Any]], ready: list[pulumi.Resource], opts: pulumi.ResourceOptions
    ) -> None:
        super().__init__("meshserve:infra:Autoscaling", name, None, opts)
        c = charts.KEDA
        self.chart = release("keda", c.chart, c.version, c.repo, "keda", {}, pulumi.ResourceOptions(parent=self))
        self.objects = apply_objects(objects, pulumi.ResourceOptions(parent=self, depends_on=[self.chart, *ready]))
        self.register_outputs({})
