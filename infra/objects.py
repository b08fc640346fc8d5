"""Plain object dicts (from mesh/compile) -> Pulumi Kubernetes resources: the only place that does it.

Built-in kinds use pulumi-kubernetes' typed classes (so Secrets get their built-in secret handling);
custom resources use a generic resource with every top-level field, because pulumi-kubernetes'
Python `CustomResource` passes only `spec` (KongPlugin's `plugin`/`config` and KongConsumer's
`username`/`credentials` live at the top level).
"""

from __future__ import annotations

import importlib
import re
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes import _utilities

# apiVersion -> pulumi_kubernetes module of the built-in kinds we generate.
BUILTIN = {
    "v1": "core.v1",
    "apps/v1": "apps.v1",
    "policy/v1": "policy.v1",
    "networking.k8s.io/v1": "networking.v1",
    "rbac.authorization.k8s.io/v1": "rbac.v1",
    "storage.k8s.io/v1": "storage.v1",
}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class KubeCustomObject(pulumi.CustomResource):
    """An instance of a CRD with all its top-level fields (same type token as pulumi-kubernetes')."""

    def __init__(self, resource_name: str, obj: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(version=_utilities.get_version()))
        super().__init__(f"kubernetes:{obj['apiVersion']}:{obj['kind']}", resource_name, dict(obj), opts)


def resource_name(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]


def apply_object(obj: dict[str, Any], opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    api, kind = obj["apiVersion"], obj["kind"]
    name = resource_name(obj)
    module_path = BUILTIN.get(api)
    if module_path is None:
        return KubeCustomObject(name, obj, opts)
    cls = getattr(importlib.import_module(f"pulumi_kubernetes.{module_path}"), kind)
    fields = {_snake(k): v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    return cls(name, opts=opts, **fields)


def apply_objects(objects: list[dict[str, Any]], opts: pulumi.ResourceOptions) -> list[pulumi.CustomResource]:
    return [apply_object(obj, opts) for obj in objects]


def release(
    name: str,
    chart: str,
    version: str,
    repo: str,
    namespace: str,
    values: dict[str, Any],
    opts: pulumi.ResourceOptions,
) -> k8s.helm.v3.Release:
    """A Helm release at a pinned chart version; Release waits for readiness, so CRDs and webhooks exist
    before anything that depends on it is created."""
    return k8s.helm.v3.Release(
        name,
        name=name,
        chart=chart,
        version=version,
        namespace=namespace,
        create_namespace=True,
        repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=repo),
        values=values,
        atomic=True,
        timeout=900,
        opts=opts,
    )
