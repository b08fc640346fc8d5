"""Istio objects from the spec: the same numbers the local gateway enforces, in Istio's words.

Per model host: a VirtualService (a header route per served version, then the weighted split with
the optional mirror; timeout and retries on every route) and a DestinationRule (a subset per version,
connection pool, outlier detection). Pipeline APIs and stages get the pipeline's resilience.
Security: mTLS STRICT in the namespace, deny by default, then ALLOW rules: the Kong gateway may call
the business APIs (and the models' v2 paths: the spec sets SLOs on direct model access), each pipeline's
own services may call its stages and its model.

gRPC: the model Services' `grpc` port is HTTP/2 to Istio (appProtocol grpc), and a VirtualService's
`http` routes without a port match apply to every HTTP-family port of its hosts, so the header routes,
the split, the mirror, the timeout and the DestinationRule cover gRPC as they cover HTTP; the
`x-model-version` header is gRPC metadata there. Three things differ. HTTP/2 multiplexes requests over
few connections, so the pool also caps active requests (`http2MaxRequests`) at `max_connections`, the
most HTTP/1.1 can have in flight. A gRPC error travels as HTTP 200 with a `grpc-status` trailer, so
`5xx` never retries it: the routes also carry Envoy's gRPC condition for the same failure
(`unavailable`: a full queue, draining, no healthy upstream), and nothing else (RESOURCE_EXHAUSTED means
an oversize message from the model server and CANCELLED a caller that gave up: a retry cannot help
either). And the mesh policy lets Kong call only the v2 methods the edge exposes (`GRPC_EDGE_METHODS`).
"""

from __future__ import annotations

from typing import Any

from mesh.compile.names import (
    GRPC_EDGE_METHODS,
    Workload,
    common_labels,
    effective_weights,
    fqdn,
    grpc_at_edge,
    grpc_edge_service,
    grpc_path,
    namespace,
    subset,
    version_replicas,
    workloads,
)
from mesh.compile.settings import Environment
from mesh.spec import MeshSpec, Resilience, format_duration

NETWORKING = "networking.istio.io/v1"
SECURITY = "security.istio.io/v1"


def _meta(name: str, ns: str, component: str) -> dict[str, Any]:
    return {"name": name, "namespace": ns, "labels": common_labels(component)}


# Envoy's gRPC retry condition for each HTTP condition that covers the same failure (a 503).
GRPC_RETRY_EQUIVALENT = {"5xx": "unavailable", "gateway-error": "unavailable"}


def retry_conditions(retry_on: list[str], grpc: bool) -> list[str]:
    """The spec's conditions, plus (for a route that also carries gRPC) their gRPC equivalents."""
    out = list(retry_on)
    if grpc:
        out += [GRPC_RETRY_EQUIVALENT[c] for c in retry_on if c in GRPC_RETRY_EQUIVALENT]
    return list(dict.fromkeys(out))


def route_policy(resilience: Resilience, grpc: bool = False) -> dict[str, Any]:
    """timeout + retries of one HTTP route (`grpc`: the route's hosts also serve v2 gRPC)."""
    retries: dict[str, Any] = {"attempts": resilience.retries.attempts}
    if resilience.retries.attempts > 0:
        if resilience.retries.per_try_timeout is not None:
            retries["perTryTimeout"] = format_duration(resilience.retries.per_try_timeout)
        retries["retryOn"] = ",".join(retry_conditions(resilience.retries.retry_on, grpc))
    return {"timeout": format_duration(resilience.timeout), "retries": retries}


PANIC_BELOW_PERCENT = 1


def traffic_policy(resilience: Resilience, grpc: bool = False) -> dict[str, Any]:
    """Connection pool and outlier detection of one host (`grpc`: the host also serves v2 gRPC)."""
    pool, outlier = resilience.connection_pool, resilience.outlier_detection
    http: dict[str, Any] = {"http1MaxPendingRequests": pool.max_pending_requests}
    if grpc:
        # HTTP/2 multiplexes requests over few connections, so maxConnections alone would not bound gRPC: cap
        # active requests at the number HTTP/1.1 can have in flight (one per connection), for both protocols.
        http["http2MaxRequests"] = pool.max_connections
    return {
        "connectionPool": {"tcp": {"maxConnections": pool.max_connections}, "http": http},
        "outlierDetection": {
            "consecutive5xxErrors": outlier.consecutive_5xx_errors,
            "interval": format_duration(outlier.interval),
            "baseEjectionTime": format_duration(outlier.base_ejection_time),
            "maxEjectionPercent": _whole_percent(outlier.max_ejection_percent, "max_ejection_percent"),
            # Envoy's panic threshold: below 1% healthy, i.e. with no host left in rotation, balance over
            # all hosts instead of answering 503 (as the local client does: services/common/upstream.py).
            "minHealthPercent": PANIC_BELOW_PERCENT,
        },
    }


def _whole_percent(value: float, field: str) -> int:
    if not float(value).is_integer():
        raise ValueError(f"resilience.outlier_detection.{field} must be a whole percent for Istio, got {value}")
    return int(value)


def model_virtual_service(model: str, spec: MeshSpec, env: Environment) -> dict[str, Any]:
    ns = namespace(spec, env)
    mspec = spec.models[model]
    host = fqdn(model, ns)
    policy = route_policy(mspec.resilience, grpc=spec.grpc.enabled)
    header = mspec.traffic.header if mspec.traffic else "x-model-version"
    served = [v for v, n in version_replicas(model, spec, env).items() if n > 0]
    routes: list[dict[str, Any]] = [
        {
            "name": f"header-{subset(v)}",
            "match": [{"headers": {header: {"regex": f"^v?{v}$"}}}],
            "route": [{"destination": {"host": host, "subset": subset(v)}}],
            **policy,
        }
        for v in served
    ]
    split: dict[str, Any] = {
        "name": "split",
        "route": [
            {"destination": {"host": host, "subset": subset(v)}, "weight": w}
            for v, w in sorted(effective_weights(model, spec, env).items())
        ],
        **policy,
    }
    mirror = mspec.traffic.mirror if mspec.traffic else None
    if mirror is not None and mirror.percentage > 0:
        split["mirror"] = {"host": host, "subset": subset(mirror.version)}
        split["mirrorPercentage"] = {"value": mirror.percentage}
    routes.append(split)
    # Kong's gRPC Service: the same routes whatever :authority Kong's gRPC proxying sends
    grpc_hosts = [fqdn(grpc_edge_service(model), ns)] if grpc_at_edge(spec, env) else []
    return {
        "apiVersion": NETWORKING,
        "kind": "VirtualService",
        "metadata": _meta(model, ns, "model-host"),
        "spec": {"hosts": [host, *grpc_hosts], "http": routes},
    }


def model_destination_rule(model: str, spec: MeshSpec, env: Environment) -> dict[str, Any]:
    ns = namespace(spec, env)
    mspec = spec.models[model]
    return {
        "apiVersion": NETWORKING,
        "kind": "DestinationRule",
        "metadata": _meta(model, ns, "model-host"),
        "spec": {
            "host": fqdn(model, ns),
            "trafficPolicy": traffic_policy(mspec.resilience, grpc=spec.grpc.enabled),
            "subsets": [{"name": subset(v), "labels": {"version": subset(v)}} for v in sorted(mspec.versions)],
        },
    }


def _pipeline_resilience(w: Workload, spec: MeshSpec) -> Resilience:
    return spec.pipelines[str(w.pipeline)].resilience


def service_virtual_service(w: Workload, spec: MeshSpec, env: Environment) -> dict[str, Any]:
    ns = namespace(spec, env)
    host = fqdn(w.name, ns)
    route = {
        "name": "default",
        "route": [{"destination": {"host": host}}],
        **route_policy(_pipeline_resilience(w, spec)),
    }
    return {
        "apiVersion": NETWORKING,
        "kind": "VirtualService",
        "metadata": _meta(w.name, ns, w.component),
        "spec": {"hosts": [host], "http": [route]},
    }


def service_destination_rule(w: Workload, spec: MeshSpec, env: Environment) -> dict[str, Any]:
    ns = namespace(spec, env)
    return {
        "apiVersion": NETWORKING,
        "kind": "DestinationRule",
        "metadata": _meta(w.name, ns, w.component),
        "spec": {"host": fqdn(w.name, ns), "trafficPolicy": traffic_policy(_pipeline_resilience(w, spec))},
    }


# --------------------------------------------------------------------------- security


def principal(ns: str, service_account: str) -> str:
    return f"cluster.local/ns/{ns}/sa/{service_account}"


def peer_authentication(spec: MeshSpec, env: Environment) -> dict[str, Any]:
    return {
        "apiVersion": SECURITY,
        "kind": "PeerAuthentication",
        "metadata": _meta("default", namespace(spec, env), "security"),
        "spec": {"mtls": {"mode": "STRICT"}},
    }


def _allow(name: str, ns: str, selector: dict[str, str], rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": SECURITY,
        "kind": "AuthorizationPolicy",
        "metadata": _meta(name, ns, "security"),
        "spec": {"selector": {"matchLabels": selector}, "action": "ALLOW", "rules": rules},
    }


def pipeline_principals(pipeline: str, spec: MeshSpec, env: Environment) -> list[str]:
    """The business API and the stage services of one pipeline."""
    ns = namespace(spec, env)
    return [principal(ns, w.name) for w in workloads(spec, env) if w.pipeline == pipeline]


def authorization_policies(spec: MeshSpec, env: Environment) -> list[dict[str, Any]]:
    ns = namespace(spec, env)
    gateway = {"from": [{"source": {"principals": [env.gateway_principal]}}]}
    policies = [
        {
            "apiVersion": SECURITY,
            "kind": "AuthorizationPolicy",
            "metadata": _meta("allow-nothing", ns, "security"),
            "spec": {},  # an empty ALLOW policy matches nothing: deny unless a rule below allows
        }
    ]
    for w in workloads(spec, env):
        if w.component == "api":
            policies.append(_allow(w.name, ns, w.selector, [gateway]))
        elif w.component == "stage":
            callers = pipeline_principals(str(w.pipeline), spec, env)
            policies.append(_allow(w.name, ns, w.selector, [{"from": [{"source": {"principals": callers}}]}]))
    for model in spec.models:
        callers = [
            p
            for pname, pipeline in spec.pipelines.items()
            if pipeline.model_stage().model == model
            for p in pipeline_principals(pname, spec, env)
        ]
        rules: list[dict[str, Any]] = []
        if callers:
            rules.append({"from": [{"source": {"principals": callers}}]})
        paths = [f"/v2/models/{model}", f"/v2/models/{model}/*"]
        if grpc_at_edge(spec, env):
            paths += [grpc_path(m) for m in GRPC_EDGE_METHODS]
        rules.append({**gateway, "to": [{"operation": {"paths": paths}}]})
        policies.append(_allow(model, ns, {"app": model}, rules))
    return policies


def compile_istio(spec: MeshSpec, env: Environment) -> list[dict[str, Any]]:
    objects = [peer_authentication(spec, env), *authorization_policies(spec, env)]
    for model in spec.models:
        if sum(effective_weights(model, spec, env).values()):
            objects.append(model_virtual_service(model, spec, env))
        # else: no version serves on this cluster; no route (Istio rejects weights summing to 0)
        objects.append(model_destination_rule(model, spec, env))
    for w in workloads(spec, env):
        if w.component in ("api", "stage"):
            objects += [service_virtual_service(w, spec, env), service_destination_rule(w, spec, env)]
    return objects
