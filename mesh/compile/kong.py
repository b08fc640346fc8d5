"""Kong Ingress Controller objects from the spec's `gateway` block: key-auth, per-consumer rate
limits, consumers with their key Secrets, and one Ingress for the pipeline routes and the models'
direct v2 paths; with the spec's `grpc` on, a second Ingress for v2 gRPC.

gRPC names the model inside the message, not in the path, so the edge routes it by host, as KServe
does for InferenceServices: `<model>.<domain>` by default (stack setting `grpcHost`), on Kong's TLS
listener (`grpcs`: the chart's TLS listener speaks HTTP/2, its plain one does not). Each host has exact
paths for the v2 methods in `GRPC_EDGE_METHODS` only, so the repository RPCs stay unreachable, as over
REST; the backend is `<model>-grpc` (mesh/compile/k8s.py: Kong's upstream protocol is per Service). The
same key-auth (Kong reads the key from the gRPC metadata, which are HTTP/2 headers) and rate limits apply.

Kong runs inside the mesh: its Services are proxied as Services (`service-upstream`, set on the
Service objects in mesh/compile/k8s.py) with `preserve-host: false`, so Kong's sidecar sees the
Service host and applies the VirtualService split, retries and mTLS. Key values never appear here:
`consumer_secret` takes the value from the caller (a Pulumi secret in infra/).

With logging on, a global `opentelemetry` KongClusterPlugin sends Kong's spans to APM Server's OTLP/HTTP
traces endpoint, so a trace starts at the edge and the pods' spans (W3C `traceparent`, which the plugin
injects) join it. APM Server wants its token, which must never sit in the plugin object: the whole
plugin config (endpoint, resource attributes and the `headers` with the token) lives in a Secret that
the plugin names with `configFrom` (`tracing_secret`, value a Pulumi secret). KIC 3.0, which the pinned
chart (ingress-0.10.0 -> kong-2.33.0) installs, has `configFrom` but not `configPatches` (KIC 3.1+): its
CRD would prune `configPatches` and `kubectl apply` would reject it. `config` and `configFrom` are
mutually exclusive, so the plugin object carries no `config` at all.
"""

from __future__ import annotations

import json
from typing import Any

from mesh.compile.names import (
    GRPC_EDGE_METHODS,
    GRPC_PORT_NAME,
    HTTP_PORT_NAME,
    common_labels,
    grpc_at_edge,
    grpc_edge_service,
    grpc_path,
    namespace,
)
from mesh.compile.settings import Environment
from mesh.spec import Consumer, MeshSpec, RateLimit

KONG = "configuration.konghq.com/v1"
INGRESS_CLASS = "kong"
KEY_AUTH = "meshserve-key-auth"
RATE_LIMIT = "meshserve-rate-limit"
KONG_NAMESPACE = "kong"  # the Kong release's namespace (infra/gateway.py)
TRACING = "meshserve-opentelemetry"
TRACING_SECRET = "meshserve-kong-otlp"  # in KONG_NAMESPACE: {"config": the plugin's config as JSON}
TRACING_SECRET_KEY = "config"


def _plugin(name: str, ns: str, plugin: str, config: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": KONG,
        "kind": "KongPlugin",
        "metadata": {"name": name, "namespace": ns, "labels": common_labels("gateway")},
        "plugin": plugin,
        "config": config,
    }


def rate_limit_config(limit: RateLimit) -> dict[str, Any]:
    return {**limit.windows(), "limit_by": "consumer", "policy": "local"}


def consumer_plugin_name(consumer: Consumer) -> str:
    return f"rate-limit-{consumer.username}"


def secret_name(consumer: Consumer) -> str:
    if not consumer.api_key.secret:
        raise ValueError(
            f"gateway.consumers.{consumer.username}.api_key.secret: a Kubernetes Secret name is needed on a "
            "cluster (the key comes from a Pulumi secret); add `secret: <name>`"
        )
    return consumer.api_key.secret


def plugins(spec: MeshSpec, env: Environment) -> list[dict[str, Any]]:
    ns = namespace(spec, env)
    gw = spec.gateway
    out = [
        _plugin(KEY_AUTH, ns, "key-auth", {"key_names": list(gw.key_names), "hide_credentials": gw.hide_credentials}),
        _plugin(RATE_LIMIT, ns, "rate-limiting", rate_limit_config(gw.rate_limit)),
    ]
    # Kong's precedence puts a consumer's plugin above a route's: the consumer's own limit wins.
    out += [
        _plugin(consumer_plugin_name(c), ns, "rate-limiting", rate_limit_config(c.rate_limit))
        for c in gw.consumers
        if c.rate_limit is not None
    ]
    return out


def tracing_config(env: Environment, token: str) -> str:
    """The opentelemetry plugin's whole config as JSON (what KIC reads from `tracing_secret` through
    `configFrom`): APM Server's OTLP/HTTP traces endpoint and its bearer token."""
    config = {
        "endpoint": f"{env.otlp_endpoint}/v1/traces",  # `traces_endpoint` from Kong 3.7; both accepted
        # no `propagation` block (Kong 3.7+ only): the default keeps an incoming W3C context or starts one
        "resource_attributes": {"service.name": "kong"},
        "headers": {"Authorization": f"Bearer {token}"},
    }
    return json.dumps(config, sort_keys=True)


def tracing_plugin(env: Environment) -> dict[str, Any]:
    """Global (label `global: "true"`) OpenTelemetry plugin; Kong also needs `tracing_instrumentations`
    and `tracing_sampling_rate` in its own config (infra/gateway.py sets them as chart env)."""
    ref = {"name": TRACING_SECRET, "namespace": KONG_NAMESPACE, "key": TRACING_SECRET_KEY}
    return {
        "apiVersion": KONG,
        "kind": "KongClusterPlugin",
        "metadata": {
            "name": TRACING,
            "labels": {**common_labels("gateway"), "global": "true"},
            "annotations": {"kubernetes.io/ingress.class": INGRESS_CLASS},
        },
        "plugin": "opentelemetry",
        "configFrom": {"secretKeyRef": ref},
    }


def tracing_secret(config: Any) -> dict[str, Any]:
    """`config` is `tracing_config(env, token)` (a Pulumi secret Output in infra/)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": TRACING_SECRET, "namespace": KONG_NAMESPACE, "labels": common_labels("gateway")},
        "type": "Opaque",
        "stringData": {TRACING_SECRET_KEY: config},
    }


def consumers(spec: MeshSpec, env: Environment) -> list[dict[str, Any]]:
    ns = namespace(spec, env)
    out = []
    for c in spec.gateway.consumers:
        annotations = {"kubernetes.io/ingress.class": INGRESS_CLASS}
        if c.rate_limit is not None:
            annotations["konghq.com/plugins"] = consumer_plugin_name(c)
        out.append(
            {
                "apiVersion": KONG,
                "kind": "KongConsumer",
                "metadata": {
                    "name": c.username,
                    "namespace": ns,
                    "labels": common_labels("gateway"),
                    "annotations": annotations,
                },
                "username": c.username,
                "credentials": [secret_name(c)],
            }
        )
    return out


def consumer_secret(consumer: Consumer, spec: MeshSpec, env: Environment, key: Any) -> dict[str, Any]:
    """The key-auth credential Secret; `key` is the value (a Pulumi secret Output in infra/)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name(consumer),
            "namespace": namespace(spec, env),
            "labels": {**common_labels("gateway"), "konghq.com/credential": "key-auth"},
        },
        "type": "Opaque",
        "stringData": {"key": key},
    }


def ingress(spec: MeshSpec, env: Environment) -> dict[str, Any]:
    def path(route: str, kind: str, service: str) -> dict[str, Any]:
        backend = {"service": {"name": service, "port": {"name": HTTP_PORT_NAME}}}
        return {"path": route, "pathType": kind, "backend": backend}

    paths = [path(p.route, "Exact", name) for name, p in spec.pipelines.items()]
    paths += [path(f"/v2/models/{model}", "Prefix", model) for model in spec.models]
    body: dict[str, Any] = {
        "ingressClassName": INGRESS_CLASS,
        "rules": [{"host": env.domain, "http": {"paths": paths}}],
    }
    if env.tls_secret:
        body["tls"] = [{"hosts": [env.domain], "secretName": env.tls_secret}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "meshserve",
            "namespace": namespace(spec, env),
            "labels": common_labels("gateway"),
            "annotations": {
                "konghq.com/plugins": f"{KEY_AUTH},{RATE_LIMIT}",
                "konghq.com/preserve-host": "false",
                "konghq.com/strip-path": "false",
            },
        },
        "spec": body,
    }


GRPC_INGRESS = "meshserve-grpc"


def grpc_ingress(spec: MeshSpec, env: Environment) -> dict[str, Any]:
    """One rule per model host, an Exact path per exposed v2 method, to the model's gRPC Service.
    `strip-path` must stay false: Kong refuses it on grpc/grpcs routes."""

    def rule(model: str) -> dict[str, Any]:
        backend = {"service": {"name": grpc_edge_service(model), "port": {"name": GRPC_PORT_NAME}}}
        paths = [{"path": grpc_path(m), "pathType": "Exact", "backend": backend} for m in GRPC_EDGE_METHODS]
        return {"host": env.grpc_host_for(model), "http": {"paths": paths}}

    body: dict[str, Any] = {"ingressClassName": INGRESS_CLASS, "rules": [rule(model) for model in spec.models]}
    if env.tls_secret:
        # the certificate must cover these hosts too (e.g. a wildcard `*.<domain>` with the default grpcHost)
        body["tls"] = [{"hosts": [env.grpc_host_for(m) for m in spec.models], "secretName": env.tls_secret}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": GRPC_INGRESS,
            "namespace": namespace(spec, env),
            "labels": common_labels("gateway"),
            "annotations": {
                "konghq.com/plugins": f"{KEY_AUTH},{RATE_LIMIT}",
                "konghq.com/protocols": "grpcs",
                "konghq.com/preserve-host": "false",
                "konghq.com/strip-path": "false",
            },
        },
        "spec": body,
    }


def compile_kong(spec: MeshSpec, env: Environment) -> list[dict[str, Any]]:
    """Everything but the Secrets (their values are secrets: see `consumer_secret`, `tracing_secret`)."""
    tracing = [tracing_plugin(env)] if env.platform.logging else []
    grpc = [grpc_ingress(spec, env)] if grpc_at_edge(spec, env) else []
    return [*plugins(spec, env), *tracing, *consumers(spec, env), ingress(spec, env), *grpc]
