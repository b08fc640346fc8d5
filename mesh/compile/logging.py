"""ECK objects for logs and traces: Elasticsearch, Kibana, an APM Server receiving OTLP from every
pod (OTEL_EXPORTER_OTLP_ENDPOINT, set in mesh/compile/k8s.py), and Filebeat shipping the containers'
ECS JSON log lines as documents. These depend only on the environment, not on the spec.

The `elastic` superuser that ECK generates stays inside the cluster; people log in as
`meshserve-admin`, a file-realm user whose password is a Pulumi secret (`elastic_admin_secret`).

APM Server only accepts requests carrying its secret token. The token is ours, not ECK's: a Pulumi
secret (`meshserve:apmSecretToken`) written to two Secrets, the APM Server's keystore
(`apm_token_secret`, referenced by `secureSettings` and set as `apm-server.auth.secret_token`, the
key APM Server 8.x reads and ECK 2.15's generated config uses for 8.x servers, which user config
overrides; the pre-8.0 `apm-server.secret_token` was removed in 8.0 and is silently ignored) and the
workload namespace's OTLP headers (`otlp_headers_secret`, read by every pod as OTEL_EXPORTER_OTLP_HEADERS through a
secretKeyRef). Copying ECK's generated `<name>-apm-token` instead would mean reading a Secret that
the operator creates only some time after the ApmServer exists (a first `pulumi up` or a preview on
an empty cluster would fail on the read) and a copy that goes stale when ECK regenerates it; a token
Pulumi owns is known before anything is created, and `meshserve render` users create both Secrets
from one value.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from mesh.compile.names import common_labels
from mesh.compile.settings import Environment

ELASTIC_VERSION = "8.15.3"
NAME = "meshserve"
ADMIN_SECRET = "meshserve-elastic-admin"
ADMIN_USER = "meshserve-admin"
FILEBEAT = "filebeat"
APM_TOKEN_SECRET = "meshserve-apm-keystore"  # logging namespace: APM Server's keystore (secureSettings)
APM_TOKEN_KEY = "APM_SECRET_TOKEN"  # keystore entry, `${APM_SECRET_TOKEN}` in the APM Server config
# APM Server 8.x's setting for the token (`apm-server.secret_token` before 8.0: removed, ignored by 8.x).
APM_SECRET_TOKEN_SETTING = "apm-server.auth.secret_token"
OTLP_HEADERS_SECRET = "meshserve-otlp-headers"  # workload namespace: OTEL_EXPORTER_OTLP_HEADERS
OTLP_HEADERS_KEY = "headers"
OTLP_AUTHORIZATION = "Authorization=Bearer%20"  # + the percent-encoded token (see `otlp_headers`)


def _meta(name: str, env: Environment, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": env.logging_namespace, "labels": common_labels("logging"), **extra}


def _node_count(env: Environment) -> int:
    return 3 if env.cluster.provider == "eks" else 1


def elasticsearch(env: Environment) -> dict[str, Any]:
    return {
        "apiVersion": "elasticsearch.k8s.elastic.co/v1",
        "kind": "Elasticsearch",
        "metadata": _meta(NAME, env),
        "spec": {
            "version": ELASTIC_VERSION,
            "auth": {"fileRealm": [{"secretName": ADMIN_SECRET}]},
            "nodeSets": [
                {
                    "name": "default",
                    "count": _node_count(env),
                    "config": {"node.store.allow_mmap": False},
                    "volumeClaimTemplates": [
                        {
                            "metadata": {"name": "elasticsearch-data"},
                            "spec": {
                                "accessModes": ["ReadWriteOnce"],
                                "resources": {"requests": {"storage": "50Gi"}},
                            },
                        }
                    ],
                }
            ],
        },
    }


def kibana(env: Environment) -> dict[str, Any]:
    return {
        "apiVersion": "kibana.k8s.elastic.co/v1",
        "kind": "Kibana",
        "metadata": _meta(NAME, env),
        "spec": {"version": ELASTIC_VERSION, "count": 1, "elasticsearchRef": {"name": NAME}},
    }


def apm_server(env: Environment) -> dict[str, Any]:
    """APM Server accepts OTLP/HTTP on :8200 (/v1/traces); its Service is `meshserve-apm-http`. Its
    secret token is ours (see the module docstring), from the keystore Secret `apm_token_secret`."""
    return {
        "apiVersion": "apm.k8s.elastic.co/v1",
        "kind": "ApmServer",
        "metadata": _meta(NAME, env),
        "spec": {
            "version": ELASTIC_VERSION,
            "count": 1,
            "elasticsearchRef": {"name": NAME},
            "kibanaRef": {"name": NAME},
            "http": {"tls": {"selfSignedCertificate": {"disabled": True}}},
            "secureSettings": [{"secretName": APM_TOKEN_SECRET}],
            "config": {APM_SECRET_TOKEN_SETTING: "${" + APM_TOKEN_KEY + "}"},
        },
    }


def filebeat(env: Environment) -> dict[str, Any]:
    """Container logs, one ECS JSON document per line, with pod metadata."""
    config = {
        "filebeat.inputs": [
            {
                "type": "filestream",
                "id": "containers",
                "paths": ["/var/log/containers/*.log"],
                "prospector.scanner.symlinks": True,
                "parsers": [
                    {"container": {}},
                    {"ndjson": {"target": "", "overwrite_keys": True, "ignore_decoding_error": True}},
                ],
                "processors": [
                    {
                        "add_kubernetes_metadata": {
                            "host": "${NODE_NAME}",
                            "matchers": [{"logs_path": {"logs_path": "/var/log/containers/"}}],
                        }
                    }
                ],
            }
        ]
    }
    host_paths = {"varlogcontainers": "/var/log/containers", "varlogpods": "/var/log/pods"}
    pod = {
        "serviceAccountName": FILEBEAT,
        "automountServiceAccountToken": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
        "hostNetwork": True,
        "securityContext": {"runAsUser": 0},  # reads the node's log files
        # Every node, tainted ones included (the GPU pool's nvidia.com/gpu taint): else GPU pods' logs stay there.
        "tolerations": [{"operator": "Exists"}],
        "containers": [
            {
                "name": "filebeat",
                "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                "volumeMounts": [{"name": n, "mountPath": p, "readOnly": True} for n, p in host_paths.items()],
            }
        ],
        "volumes": [{"name": n, "hostPath": {"path": p}} for n, p in host_paths.items()],
    }
    return {
        "apiVersion": "beat.k8s.elastic.co/v1beta1",
        "kind": "Beat",
        "metadata": _meta(NAME, env),
        "spec": {
            "type": "filebeat",
            "version": ELASTIC_VERSION,
            "elasticsearchRef": {"name": NAME},
            "kibanaRef": {"name": NAME},
            "config": config,
            "daemonSet": {"podTemplate": {"spec": pod}},
        },
    }


def filebeat_rbac(env: Environment) -> list[dict[str, Any]]:
    """add_kubernetes_metadata reads pods, namespaces and nodes."""
    rules = [{"apiGroups": [""], "resources": ["namespaces", "pods", "nodes"], "verbs": ["get", "watch", "list"]}]
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"meshserve-{FILEBEAT}"}
    subject = {"kind": "ServiceAccount", "name": FILEBEAT, "namespace": env.logging_namespace}
    labels = common_labels("logging")
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(FILEBEAT, env)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": f"meshserve-{FILEBEAT}", "labels": labels},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"meshserve-{FILEBEAT}", "labels": labels},
            "roleRef": ref,
            "subjects": [subject],
        },
    ]


def elastic_admin_secret(env: Environment, password: Any) -> dict[str, Any]:
    """ECK file-realm user (basic-auth Secret with `roles`); `password` is a Pulumi secret in infra/."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(ADMIN_SECRET, env),
        "type": "kubernetes.io/basic-auth",
        "stringData": {"username": ADMIN_USER, "password": password, "roles": "superuser"},
    }


def otlp_headers(token: str) -> str:
    """OTEL_EXPORTER_OTLP_HEADERS carrying APM Server's token: W3C baggage format, the value percent-encoded
    (the space of `Bearer <token>` too), as the OTel spec asks and the Python SDK's strict parser reads."""
    return OTLP_AUTHORIZATION + quote(token, safe="")


def apm_token_secret(env: Environment, token: Any) -> dict[str, Any]:
    """APM Server's keystore entry for its secret token; `token` is a Pulumi secret in infra/."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(APM_TOKEN_SECRET, env),
        "type": "Opaque",
        "stringData": {APM_TOKEN_KEY: token},
    }


def otlp_headers_secret(namespace: str, headers: Any) -> dict[str, Any]:
    """The workload pods' OTLP headers (`otlp_headers(token)`, a Pulumi secret in infra/)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": OTLP_HEADERS_SECRET, "namespace": namespace, "labels": common_labels("logging")},
        "type": "Opaque",
        "stringData": {OTLP_HEADERS_KEY: headers},
    }


def logging_namespace(env: Environment) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": env.logging_namespace, "labels": common_labels("logging")},
    }


def compile_logging(env: Environment) -> list[dict[str, Any]]:
    """Everything but the Secrets (their values are secrets: `elastic_admin_secret`, `apm_token_secret`,
    `otlp_headers_secret`)."""
    return [
        logging_namespace(env),
        *filebeat_rbac(env),
        elasticsearch(env),
        kibana(env),
        apm_server(env),
        filebeat(env),
    ]
