"""Core Kubernetes objects from the spec: namespace, config, and per workload a ServiceAccount,
Deployment, Service and PodDisruptionBudget; per model a host Service that Istio splits by version (and,
with Kong and gRPC on, `<model>-grpc`, the Service Kong proxies gRPC to).

Model artifacts: an init container syncs exactly one version (plus the model's config.yaml and
labels.txt) from object storage into an emptyDir before the server starts. The server image stays
generic (one image for every model and version, rebuilt only when code changes); a new version is an
upload plus a spec edit; each pod reads a local copy (no ReadWriteMany volume, which EBS lacks; no
network filesystem in the hot path); and the artifacts are immutable per version, so a pod never
sees a half-written model. Pipeline pods sync the whole repository (the spec loader checks every
version's artifact; postprocess reads labels.txt). A dev cluster can instead mount an existing claim
read-only (modelStore type `pvc`).

Pods get the spec (without `traffic`: on Kubernetes the version split belongs to Istio, so the
weights live only in the VirtualService and a canary change rolls no pod) and a static discovery
file naming every service by its cluster DNS name, the plain `<model>` host included: in-process
clients call Service hosts and the sidecar applies the mesh policies. With Istio, MESHSERVE_TRAFFIC=mesh
tells the business API to call `<model>` and leave the split, retries and ejection to the sidecar
(services/common/traffic.py); MESHSERVE_VERSION_HEADER names the override header the VirtualService
matches, since the pods' spec has no `traffic` block to read it from.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from mesh.compile.logging import OTLP_HEADERS_KEY, OTLP_HEADERS_SECRET
from mesh.compile.names import (
    GRPC_PORT_NAME,
    HTTP_PORT,
    HTTP_PORT_NAME,
    ISTIO_MERGED_METRICS_PORT,
    METRICS_PORT_NAME,
    Workload,
    common_labels,
    fqdn,
    grpc_at_edge,
    grpc_edge_service,
    namespace,
    workloads,
)
from mesh.compile.settings import Environment
from mesh.spec import MeshSpec
from services.common.settings import SPEC_ENV
from services.common.traffic import CLIENT, DEFAULT_VERSION_HEADER, MESH, TRAFFIC_ENV, VERSION_HEADER_ENV

SPEC_CONFIGMAP = "meshserve-spec"
CONFIG_DIR = "/etc/meshserve"
MODELS_DIR = "/models"
RUN_AS = 10001
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
PLAIN_METRICS_PORT = 9100  # Service port for /metrics when no Istio agent merges metrics


def _meta(name: str, ns: str | None, labels: dict[str, str], annotations: dict[str, str] | None = None):
    meta: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if ns:
        meta["namespace"] = ns
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def namespace_object(spec: MeshSpec, env: Environment) -> dict[str, Any]:
    labels = common_labels("namespace")
    if env.platform.istio:
        labels["istio-injection"] = "enabled"
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(namespace(spec, env), None, labels)}


def pod_spec_document(spec: MeshSpec) -> dict[str, Any]:
    """The spec as pods read it: artifacts under /models, and no traffic block (Istio owns the split)."""
    doc = spec.model_dump(mode="json", exclude={"models": {m: {"traffic"} for m in spec.models}})
    doc["repository"] = MODELS_DIR
    return doc


def discovery_document(spec: MeshSpec, env: Environment) -> dict[str, Any]:
    """The static discovery table (`endpoints.json`, services/discovery/__init__.py), each service at its
    cluster DNS name."""
    ns = namespace(spec, env)
    services: dict[str, list[dict[str, Any]]] = {}
    for w in workloads(spec, env):
        meta = {"version": str(w.version)} if w.version is not None else {}
        if w.component == "model" and spec.grpc.enabled:
            meta["grpc_port"] = str(spec.grpc.port)  # the gateway's gRPC listener forwards there
        services[w.name] = [{"instance": w.name, "host": fqdn(w.name, ns), "port": HTTP_PORT, "meta": meta}]
    for model in spec.models:
        services[model] = [{"instance": model, "host": fqdn(model, ns), "port": HTTP_PORT, "meta": {}}]
    return {"services": services}


def config_map(spec: MeshSpec, env: Environment) -> dict[str, Any]:
    data = {
        "mesh.yaml": yaml.safe_dump(pod_spec_document(spec), sort_keys=False),
        "endpoints.json": json.dumps(discovery_document(spec, env), indent=2, sort_keys=True),
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(SPEC_CONFIGMAP, namespace(spec, env), common_labels("config")),
        "data": data,
    }


def with_role_arn(service_account: dict[str, Any], role_arn: Any) -> dict[str, Any]:
    """The ServiceAccount annotated for IRSA (`role_arn` may be a Pulumi Output: infra/ makes the role)."""
    meta = service_account["metadata"]
    annotations = {**meta.get("annotations", {}), IRSA_ANNOTATION: role_arn}
    return {**service_account, "metadata": {**meta, "annotations": annotations}}


def service_account(w: Workload, spec: MeshSpec, env: Environment) -> dict[str, Any]:
    annotations = {}
    if env.model_store.type == "s3" and env.model_store.role_arn:
        annotations[IRSA_ANNOTATION] = env.model_store.role_arn  # IRSA: read the bucket
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(w.name, namespace(spec, env), w.labels, annotations),
        "automountServiceAccountToken": False,
    }


def command(w: Workload, spec: MeshSpec, env: Environment) -> list[str]:
    """The container's command: the model server CLI, or the pipeline service runner."""
    listen = ["--host", "0.0.0.0", "--port", str(HTTP_PORT)]
    if w.component == "model":
        pinned = spec.models[w.model].serve_args(w.model, w.version)
        grpc = spec.grpc.serve_args(spec.grpc.port)
        serve = ["meshserve", "serve", "--repository", MODELS_DIR, *pinned, *listen, *grpc]
        return [*serve, *_drain(env), *_device(w, spec)]
    return ["python", "-m", "services.pipeline", "--service", w.name, *listen]


def _device(w: Workload, spec: MeshSpec) -> list[str]:
    """A `device: gpu` pod refuses readiness when only the CPU provider loads (a wrong CUDA base, a missing
    driver), unless the version allows `cpu_fallback`; the local stack never passes this flag."""
    version = spec.models[str(w.model)].versions[int(w.version or 0)]
    return ["--require-device", "gpu"] if version.device == "gpu" and not version.cpu_fallback else []


def _drain(env: Environment) -> list[str]:
    return ["--drain-limit", str(env.drain_seconds)]


HEALTH = {"model": ("/v2/health/live", "/v2/health/ready"), "pipeline": ("/healthz", "/ready")}


def _security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "capabilities": {"drop": ["ALL"]},
    }


def _env(w: Workload, spec: MeshSpec, env: Environment) -> list[dict[str, Any]]:
    ns = namespace(spec, env)
    values: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "HOME", "value": "/tmp"},  # the only writable place: the root filesystem is read-only
        {"name": SPEC_ENV, "value": f"{CONFIG_DIR}/mesh.yaml"},
        {"name": "MESHSERVE_DISCOVERY", "value": f"static:{CONFIG_DIR}/endpoints.json"},
        {"name": TRAFFIC_ENV, "value": MESH if env.platform.istio else CLIENT},
        {"name": "OTEL_SERVICE_NAME", "value": w.name},
        {"name": "OTEL_RESOURCE_ATTRIBUTES", "value": f"k8s.pod.name=$(POD_NAME),service.namespace={ns}"},
    ]
    if w.component == "api":
        values.append({"name": VERSION_HEADER_ENV, "value": version_header(w, spec)})
    if env.platform.logging:
        values.append({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": env.otlp_endpoint})
        # APM Server's token, never a literal here (see mesh/compile/logging.py)
        secret = {"name": OTLP_HEADERS_SECRET, "key": OTLP_HEADERS_KEY}
        values.append({"name": "OTEL_EXPORTER_OTLP_HEADERS", "valueFrom": {"secretKeyRef": secret}})
    return values


def version_header(w: Workload, spec: MeshSpec) -> str:
    """The override header the VirtualService of the pipeline's model matches (mesh/compile/istio.py)."""
    traffic = spec.models[spec.pipelines[str(w.pipeline)].model_stage().model].traffic
    return traffic.header.lower() if traffic else DEFAULT_VERSION_HEADER


def _resources(w: Workload, spec: MeshSpec) -> dict[str, Any]:
    if w.component != "model":
        return {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}
    vspec = spec.models[str(w.model)].versions[int(w.version or 0)]
    resources = {"requests": dict(vspec.resources.requests), "limits": dict(vspec.resources.limits)}
    if w.gpu:
        resources["limits"]["nvidia.com/gpu"] = str(vspec.gpus)
    return resources


def sync_filters(w: Workload) -> list[str]:
    """`aws s3 sync` filters: a model pod takes its one version; pipeline pods take the repository
    (the spec loader checks every version's artifact, postprocess reads labels.txt)."""
    if w.component != "model":
        return []
    return ["--exclude", "*", "--include", "config.yaml", "--include", "labels.txt", "--include", f"{w.version}/*"]


def _model_sync(w: Workload, env: Environment) -> dict[str, Any]:
    base = str(env.model_store.uri).rstrip("/")
    source, target = (f"{base}/{w.model}/", f"{MODELS_DIR}/{w.model}/") if w.model else (f"{base}/", f"{MODELS_DIR}/")
    return {
        "name": "model-sync",
        "image": env.model_store.image,
        "command": ["aws", "s3", "sync", source, target, "--no-progress", *sync_filters(w)],
        "env": [{"name": "HOME", "value": "/tmp"}],
        "securityContext": _security_context(),
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "volumeMounts": [{"name": "models", "mountPath": MODELS_DIR}, {"name": "tmp", "mountPath": "/tmp"}],
    }


def pod_template(w: Workload, spec: MeshSpec, env: Environment) -> dict[str, Any]:
    mounts = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "models", "mountPath": MODELS_DIR, "readOnly": True},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": SPEC_CONFIGMAP}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    if env.model_store.type == "pvc":
        volumes.append(
            {"name": "models", "persistentVolumeClaim": {"claimName": env.model_store.claim, "readOnly": True}}
        )
    else:
        volumes.append({"name": "models", "emptyDir": {"sizeLimit": "10Gi"}})
    live, ready = HEALTH["model" if w.component == "model" else "pipeline"]

    def probe(path: str, failure_threshold: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": HTTP_PORT_NAME},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": failure_threshold,
        }

    container = {
        "name": "server",
        "image": env.image(gpu=w.gpu),
        "imagePullPolicy": "IfNotPresent",
        "command": command(w, spec, env),
        "ports": _container_ports(w, spec),
        "env": _env(w, spec, env),
        "resources": _resources(w, spec),
        "startupProbe": probe(ready, 60),  # model loads can take minutes on a cold GPU
        "livenessProbe": probe(live, 3),
        "readinessProbe": probe(ready, 2),
        # Endpoints drop a terminating pod while this sleeps; then SIGTERM starts the server's drain.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(env.prestop_seconds)]}}},
        "securityContext": _security_context(),
        "volumeMounts": mounts,
    }
    pod: dict[str, Any] = {
        "serviceAccountName": w.name,
        "terminationGracePeriodSeconds": env.grace_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if env.model_store.type == "s3":
        pod["initContainers"] = [_model_sync(w, env)]
    if w.gpu:
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        pod["nodeSelector"] = dict(env.gpu_node_selector)
    annotations = {
        # istio-agent merges these app metrics with Envoy's on :15020 (plain HTTP, outside mTLS).
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(HTTP_PORT),
        "prometheus.io/path": "/metrics",
    }
    if env.platform.istio:
        annotations["proxy.istio.io/config"] = json.dumps(
            {
                "holdApplicationUntilProxyStarts": True,
                "terminationDrainDuration": f"{env.grace_seconds - 5}s",
                "proxyMetadata": {"EXIT_ON_ZERO_ACTIVE_CONNECTIONS": "true"},
            },
            sort_keys=True,
        )
    return {"metadata": {"labels": w.labels, "annotations": annotations}, "spec": pod}


def autoscaled(w: Workload, env: Environment) -> bool:
    """KEDA owns the replica count of serving model versions (see mesh/compile/keda.py)."""
    return env.platform.keda and w.component == "model" and w.replicas > 0


def deployment(w: Workload, spec: MeshSpec, env: Environment) -> dict[str, Any]:
    body: dict[str, Any] = {
        "selector": {"matchLabels": w.selector},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "revisionHistoryLimit": 5,
        "template": pod_template(w, spec, env),
    }
    if not autoscaled(w, env):
        body = {"replicas": w.replicas, **body}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(w.name, namespace(spec, env), w.labels),
        "spec": body,
    }


def _http_port() -> dict[str, Any]:
    return {"name": HTTP_PORT_NAME, "port": HTTP_PORT, "targetPort": HTTP_PORT_NAME, "protocol": "TCP"}


def _container_ports(w: Workload, spec: MeshSpec) -> list[dict[str, Any]]:
    ports = [{"name": HTTP_PORT_NAME, "containerPort": HTTP_PORT, "protocol": "TCP"}]
    if w.component == "model" and spec.grpc.enabled:
        ports.append({"name": GRPC_PORT_NAME, "containerPort": spec.grpc.port, "protocol": "TCP"})
    return ports


def _grpc_ports(spec: MeshSpec) -> list[dict[str, Any]]:
    """The model servers' gRPC port; appProtocol grpc makes Istio carry it as HTTP/2 (Kong routes it
    with its grpc protocol)."""
    if not spec.grpc.enabled:
        return []
    port = spec.grpc.port
    return [
        {"name": GRPC_PORT_NAME, "port": port, "targetPort": GRPC_PORT_NAME, "protocol": "TCP", "appProtocol": "grpc"}
    ]


def _kong_upstream(service: str, ns: str, env: Environment) -> dict[str, str]:
    """Kong proxies to the Service (not pod IPs) with the Service's Host, so its sidecar applies Istio routing."""
    if not env.platform.kong:
        return {}
    return {"ingress.kubernetes.io/service-upstream": "true", "konghq.com/host-header": fqdn(service, ns)}


def service(w: Workload, spec: MeshSpec, env: Environment) -> dict[str, Any]:
    ns = namespace(spec, env)
    metrics_target = ISTIO_MERGED_METRICS_PORT if env.platform.istio else HTTP_PORT_NAME
    metrics_port = ISTIO_MERGED_METRICS_PORT if env.platform.istio else PLAIN_METRICS_PORT
    annotations = _kong_upstream(w.name, ns, env) if w.component == "api" else {}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(w.name, ns, w.labels, annotations),
        "spec": {
            "selector": w.selector,
            "ports": [
                _http_port(),
                {"name": METRICS_PORT_NAME, "port": metrics_port, "targetPort": metrics_target, "protocol": "TCP"},
                *(_grpc_ports(spec) if w.component == "model" else []),
            ],
        },
    }


def model_host_service(model: str, spec: MeshSpec, env: Environment) -> dict[str, Any]:
    """`<model>`: every version's pods; the VirtualService for this host picks the subset."""
    ns = namespace(spec, env)
    labels = {"app": model, "app.kubernetes.io/name": model, **common_labels("model-host")}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(model, ns, labels, _kong_upstream(model, ns, env)),
        "spec": {"selector": {"app": model}, "ports": [_http_port(), *_grpc_ports(spec)]},
    }


def model_grpc_service(model: str, spec: MeshSpec, env: Environment) -> dict[str, Any]:
    """`<model>-grpc`: the same pods' gRPC port, for Kong alone. Kong sets its upstream protocol per Service
    (`konghq.com/protocol: grpc`), so the `<model>` Service, whose HTTP port Kong proxies as HTTP/1.1, cannot
    carry it. Kong sends the `<model>` host (host-header), so its sidecar applies the `<model>`
    VirtualService and DestinationRule to gRPC as to HTTP (that VirtualService also lists this host)."""
    ns = namespace(spec, env)
    name = grpc_edge_service(model)
    labels = {"app": model, "app.kubernetes.io/name": name, **common_labels("model-host")}
    annotations = {**_kong_upstream(model, ns, env), "konghq.com/protocol": "grpc"}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, ns, labels, annotations),
        "spec": {"selector": {"app": model}, "ports": _grpc_ports(spec)},
    }


def _distinct_names(spec: MeshSpec, env: Environment) -> None:
    taken = {w.name for w in workloads(spec, env)} | set(spec.models)
    clash = sorted(grpc_edge_service(m) for m in spec.models if grpc_edge_service(m) in taken)
    if clash:
        raise ValueError(
            f"Service name(s) {clash} are needed for the models' gRPC routes through Kong but a pipeline, stage "
            "or model already has them; rename that pipeline or stage"
        )


def disruption_budget(w: Workload, spec: MeshSpec, env: Environment) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(w.name, namespace(spec, env), w.labels),
        # maxUnavailable (not minAvailable) so a single-replica workload never blocks a node drain.
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": w.selector}},
    }


def compile_core(spec: MeshSpec, env: Environment) -> list[dict[str, Any]]:
    objects = [namespace_object(spec, env), config_map(spec, env)]
    for w in workloads(spec, env):
        objects += [service_account(w, spec, env), deployment(w, spec, env), service(w, spec, env)]
        if w.replicas > 0:
            objects.append(disruption_budget(w, spec, env))
    objects += [model_host_service(model, spec, env) for model in spec.models]
    if grpc_at_edge(spec, env):
        _distinct_names(spec, env)
        objects += [model_grpc_service(model, spec, env) for model in spec.models]
    return objects
