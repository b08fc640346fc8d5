"""Names and labels shared by every compiler: one place decides how a spec entry becomes an object name.

Service names are also the discovery keys locally (services/discovery/__init__.py): `<model>-v<version>`
(services/common/routing.py's `model_service`, the gateway's and the business API's rule), `<pipeline>-<stage>`,
`<pipeline>` (business API), and `<model>` (the host that Istio splits across versions). Istio reads the
`app`/`version` labels for subsets and telemetry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mesh.compile.settings import Environment
from mesh.spec import MeshSpec
from services.common.routing import model_service

HTTP_PORT = 8000
HTTP_PORT_NAME = "http"  # Istio picks the protocol from the `http` prefix
GRPC_PORT_NAME = "grpc"  # and HTTP/2 from `grpc` (the Service port also says appProtocol: grpc)
METRICS_PORT_NAME = "http-metrics"
GRPC_SERVICE = "inference.GRPCInferenceService"
# The v2 gRPC methods the edge (Kong, and the mesh policy that lets Kong in) exposes: the embedded
# gateway's set (services/gateway/grpc_proxy.py) plus the server health and metadata of the model's own
# servers. The repository RPCs (index, load, unload) stay unreachable from outside, as over REST.
GRPC_EDGE_METHODS = (
    "ServerLive",
    "ServerReady",
    "ServerMetadata",
    "ModelReady",
    "ModelMetadata",
    "ModelConfig",
    "ModelStatistics",
    "ModelInfer",
)
ISTIO_MERGED_METRICS_PORT = 15020  # istio-agent serves app + Envoy metrics here, outside mTLS
PART_OF = "meshserve"

Component = Literal["model", "stage", "api"]


def version_name(model: str, version: int) -> str:
    return model_service(model, version)


def grpc_edge_service(model: str) -> str:
    """The Service Kong proxies a model's gRPC to: Kong's upstream protocol is set per Service
    (`konghq.com/protocol`), not per port, so gRPC needs its own beside the `<model>` host Service."""
    return f"{model}-grpc"


def grpc_at_edge(spec: MeshSpec, env: Environment) -> bool:
    """Kong routes gRPC to the models (per model host, see mesh/compile/kong.py)."""
    return spec.grpc.enabled and env.platform.kong


def grpc_path(method: str) -> str:
    return f"/{GRPC_SERVICE}/{method}"


def subset(version: int) -> str:
    return f"v{version}"


def namespace(spec: MeshSpec, env: Environment) -> str:
    return env.namespace or spec.namespace


def fqdn(service: str, ns: str) -> str:
    return f"{service}.{ns}.svc.cluster.local"


@dataclass(frozen=True)
class Workload:
    """One Deployment + Service + ServiceAccount: a model version, a pipeline stage, or a business API."""

    name: str
    component: Component
    app: str  # Istio `app` label: the model name for model versions, else the service name
    replicas: int
    version: int | None = None
    model: str | None = None
    pipeline: str | None = None
    gpu: bool = False
    extra_labels: dict[str, str] = field(default_factory=dict)

    @property
    def selector(self) -> dict[str, str]:
        labels = {"app": self.app}
        if self.version is not None:
            labels["version"] = subset(self.version)
        return labels

    @property
    def labels(self) -> dict[str, str]:
        return {
            **self.selector,
            "app.kubernetes.io/name": self.name,
            "app.kubernetes.io/component": self.component,
            "app.kubernetes.io/part-of": PART_OF,
            **self.extra_labels,
        }


def version_replicas(model: str, spec: MeshSpec, env: Environment) -> dict[int, int]:
    """Replicas per version after the stack's overrides (keyed by service name, e.g. `resnet-v1: 0`)."""
    versions = spec.models[model].versions
    return {v: env.replicas.get(version_name(model, v), vs.replicas) for v, vs in versions.items()}


def effective_weights(model: str, spec: MeshSpec, env: Environment) -> dict[int, int]:
    """Version weights on this cluster: the spec's `traffic.weights`; with no traffic block, everything to
    the highest version still serving after overrides (the spec's own rule). An override may not empty
    a version the spec sends traffic to: that would answer 503s, so it is refused here."""
    mspec = spec.models[model]
    replicas = version_replicas(model, spec, env)
    if mspec.traffic is None:
        served = [v for v, n in replicas.items() if n > 0]
        return {v: (100 if served and v == max(served) else 0) for v in replicas}
    weights = mspec.weights()
    for version, weight in weights.items():
        if weight > 0 and replicas[version] == 0:
            raise ValueError(
                f"replicas: {version_name(model, version)} is set to 0 by the stack config, but mesh.yaml sends it "
                f"{weight}% of {model}'s traffic; move the weight first (`meshserve canary set`) or keep a replica"
            )
    return weights


def workloads(spec: MeshSpec, env: Environment) -> list[Workload]:
    """Every workload the spec declares, replicas after the stack's overrides (keyed by service name)."""
    out: list[Workload] = []
    for model, mspec in spec.models.items():
        effective_weights(model, spec, env)  # refuses an override that empties a weighted version
        replicas = version_replicas(model, spec, env)
        for version, vspec in mspec.versions.items():
            out.append(
                Workload(
                    name=version_name(model, version),
                    component="model",
                    app=model,
                    replicas=replicas[version],
                    version=version,
                    model=model,
                    gpu=vspec.device == "gpu",
                )
            )
    for service, _pipeline, stage in spec.stage_services():
        pname = service.removesuffix(f"-{stage.name}")
        out.append(
            Workload(
                name=service,
                component="stage",
                app=service,
                replicas=env.replicas.get(service, stage.replicas),
                pipeline=pname,
                extra_labels={"meshserve.io/pipeline": pname},
            )
        )
    for pname, pipeline in spec.pipelines.items():
        out.append(
            Workload(
                name=pname,
                component="api",
                app=pname,
                replicas=env.replicas.get(pname, pipeline.replicas),
                pipeline=pname,
                extra_labels={"meshserve.io/pipeline": pname},
            )
        )
    return out


def common_labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/component": component}
