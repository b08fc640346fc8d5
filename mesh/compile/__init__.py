"""Compilers: pure functions from the spec (+ environment settings) to plain Kubernetes objects.

`compile_all` is what both consumers use: infra/ wraps each group in Pulumi resources (the group
says which chart must be installed first), `meshserve render` writes them as YAML. Secrets are not
compiled here: their values exist only as Pulumi secrets (see kong.consumer_secret and
logging.elastic_admin_secret).
"""

from __future__ import annotations

from typing import Any

from mesh.compile.settings import Environment
from mesh.spec import MeshSpec

Object = dict[str, Any]
# Group name -> the platform part whose chart brings the CRDs (or, for core, none).
GROUPS = ("core", "istio", "kong", "keda", "monitoring", "logging")


def compile_all(spec: MeshSpec, env: Environment) -> dict[str, list[Object]]:
    """Every object for this spec and environment, by group; a disabled platform part yields nothing."""
    from mesh.compile import istio, k8s, keda, kong, logging, monitoring

    return {
        "core": k8s.compile_core(spec, env),
        "istio": istio.compile_istio(spec, env) if env.platform.istio else [],
        "kong": kong.compile_kong(spec, env) if env.platform.kong else [],
        "keda": keda.compile_keda(spec, env) if env.platform.keda else [],
        "monitoring": monitoring.compile_monitoring(spec, env) if env.platform.monitoring else [],
        "logging": logging.compile_logging(env) if env.platform.logging else [],
    }


def flatten(groups: dict[str, list[Object]]) -> list[Object]:
    return [obj for name in GROUPS for obj in groups.get(name, [])]


def object_key(obj: Object) -> str:
    """`Kind/namespace/name` (namespace `_` for cluster-scoped objects): unique within a render."""
    meta = obj["metadata"]
    return f"{obj['kind']}/{meta.get('namespace', '_')}/{meta['name']}"
