"""Environment-level settings: what differs between clusters, never what runs or with which policies.

They live in a Pulumi stack's config (`Pulumi.<stack>.yaml`, keys `meshserve:<camelCaseName>`), so the
Pulumi program and `meshserve render` read the same values. Secrets (API keys, Grafana admin, Elastic
password, APM Server token) are NOT here: they exist only as Pulumi secrets, read by `infra/` alone.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel
from ruamel.yaml import YAML

CONFIG_NAMESPACE = "meshserve"
# Secret config keys: read by infra/ as Pulumi secrets, skipped (never validated or printed) here.
SECRET_KEYS = frozenset({"apiKeys", "grafanaAdminPassword", "elasticPassword", "apmSecretToken"})


_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


class NodePool(_Settings):
    instance_type: str
    min_size: int = Field(1, ge=0)
    desired_size: int = Field(1, ge=0)
    max_size: int = Field(3, ge=1)
    disk_size_gb: int = Field(100, ge=20)


class ClusterSettings(_Settings):
    """`kubeconfig`: an existing cluster through a kubeconfig context; `eks`: AWS EKS made by pulumi-eks."""

    provider: Literal["kubeconfig", "eks"] = "kubeconfig"
    context: str | None = Field(None, description="kubeconfig context (kubeconfig provider)")
    kubeconfig: str | None = Field(None, description="kubeconfig path; default: $KUBECONFIG or ~/.kube/config")
    version: str = Field("1.30", pattern=r"^1\.\d+$", description="Kubernetes minor version (eks)")
    load_balancer: bool | None = Field(
        None,
        description="the cluster gives LoadBalancer Services an external address (default: eks yes, "
        "kubeconfig no: plain kind/minikube never do, so Helm's wait on one would time out)",
    )
    gpu_pool: NodePool = Field(default_factory=lambda: NodePool(instance_type="g5.xlarge", min_size=0))
    cpu_pool: NodePool = Field(default_factory=lambda: NodePool(instance_type="m6i.xlarge", min_size=2, desired_size=3))

    @property
    def has_load_balancer(self) -> bool:
        return self.load_balancer if self.load_balancer is not None else self.provider == "eks"

    @model_validator(mode="after")
    def _eks_has_no_context(self) -> ClusterSettings:
        if self.provider == "eks" and self.context:
            raise ValueError("cluster.context is for the kubeconfig provider; eks makes its own kubeconfig")
        return self


class ModelStore(_Settings):
    """Where model artifacts come from (see mesh/compile/k8s.py: why an init container, not the image).

    s3: an init container (`image`) runs `aws s3 sync <uri>/<model>/...` into an emptyDir; credentials
    through IRSA (`roleArn` annotates the model ServiceAccounts). pvc: an existing claim holding the
    repository, mounted read-only (a dev cluster, or ReadOnlyMany storage such as EFS).
    """

    type: Literal["s3", "pvc"] = "s3"
    uri: str | None = Field(None, pattern=r"^s3://[a-z0-9.\-]+(/.*)?$")
    claim: str | None = None
    image: str = "amazon/aws-cli:2.22.35"
    role_arn: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> ModelStore:
        if self.type == "s3" and not self.uri:
            raise ValueError("modelStore.uri (s3://bucket/prefix) is required when modelStore.type is s3")
        if self.type == "pvc" and not self.claim:
            raise ValueError("modelStore.claim is required when modelStore.type is pvc")
        return self


class Platform(_Settings):
    """Which platform parts the Pulumi program installs (and which objects render emits)."""

    gpu: bool = True
    istio: bool = True
    kong: bool = True
    monitoring: bool = True
    logging: bool = True
    keda: bool = True


class Autoscaling(_Settings):
    max_factor: int = Field(4, ge=1, description="maxReplicaCount = replicas x this")
    queue_depth_target: int = Field(8, ge=1, description="queued requests per pod before KEDA adds one")
    polling_interval: int = Field(15, ge=1)
    cooldown_period: int = Field(120, ge=0)


class Environment(_Settings):
    stack: str = "dev"
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    namespace: str | None = Field(None, description="overrides the spec's namespace")
    image_registry: str = "ghcr.io/meshserve"
    image_tag: str = "0.1.0"
    domain: str = "meshserve.example.com"
    tls_secret: str | None = None
    grpc_host: str = Field(
        "{model}.{domain}",
        description="the host a gRPC client names to reach one model through Kong ({model}, {domain}): gRPC "
        "carries the model name inside the message, so the edge routes by host, as KServe does",
    )
    replicas: dict[str, int] = Field(default_factory=dict, description="service name -> replicas")
    model_store: ModelStore = Field(default_factory=lambda: ModelStore(uri="s3://meshserve-models/models"))
    platform: Platform = Field(default_factory=Platform)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    gpu_node_selector: dict[str, str] = Field(default_factory=lambda: {"meshserve.io/pool": "gpu"})
    gateway_principal: str = Field(
        "cluster.local/ns/kong/sa/kong-gateway", description="mTLS identity of the Kong proxy pods"
    )
    monitoring_namespace: str = "monitoring"
    logging_namespace: str = "logging"
    prestop_seconds: int = Field(5, ge=0, description="preStop sleep: endpoints leave load balancers first")
    drain_seconds: int = Field(20, ge=1, description="server's --drain-limit: longest wait for in-flight work")

    @model_validator(mode="after")
    def _replicas_positive(self) -> Environment:
        bad = {k: v for k, v in self.replicas.items() if v < 0}
        if bad:
            raise ValueError(f"replicas: negative counts {bad}")
        return self

    @model_validator(mode="after")
    def _grpc_host_pattern(self) -> Environment:
        if "{model}" not in self.grpc_host:
            raise ValueError(f"grpcHost {self.grpc_host!r} must contain {{model}}: each model needs its own host")
        try:
            host = self.grpc_host_for("m")
        except (KeyError, IndexError, ValueError):
            raise ValueError(
                f"grpcHost {self.grpc_host!r}: only the placeholders {{model}} and {{domain}} are known"
            ) from None
        if not _DNS_NAME.fullmatch(host):
            raise ValueError(f"grpcHost {self.grpc_host!r} gives {host!r}, not a DNS name (lowercase, dots, dashes)")
        return self

    def grpc_host_for(self, model: str) -> str:
        return self.grpc_host.format(model=model, domain=self.domain)

    def image(self, gpu: bool = False) -> str:
        return f"{self.image_registry}/meshserve{'-gpu' if gpu else ''}:{self.image_tag}"

    @property
    def grace_seconds(self) -> int:
        """terminationGracePeriodSeconds: longer than preStop + drain, so the kubelet never kills mid-drain."""
        return self.prestop_seconds + self.drain_seconds + 10

    @property
    def prometheus_url(self) -> str:
        return f"http://kps-prometheus.{self.monitoring_namespace}.svc:9090"

    @property
    def otlp_endpoint(self) -> str:
        return f"http://meshserve-apm-http.{self.logging_namespace}.svc:8200"


class SettingsError(ValueError):
    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: bad stack config:\n" + "\n".join(f"  - {p}" for p in problems))


def environment_from_config(values: dict[str, Any], *, stack: str, source: str = "<config>") -> Environment:
    """Validate `meshserve:*` config values (prefix stripped or not); secret keys are skipped."""
    plain = {}
    for key, value in values.items():
        namespace, _, name = key.rpartition(":")
        if namespace and namespace != CONFIG_NAMESPACE:
            continue  # another provider's config (aws:region, kubernetes:context)
        if name not in SECRET_KEYS:
            plain[name] = value
    try:
        return Environment.model_validate({"stack": stack, **plain})
    except ValidationError as exc:
        problems = []
        for item in exc.errors():
            where = "meshserve:" + ".".join(str(p) for p in item["loc"]) if item["loc"] else "(top level)"
            msg = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                msg = "unknown setting: remove it or check its spelling"
            problems.append(f"{where}: {msg}")
        raise SettingsError(source, problems) from None


def stack_file(stack: str, root: Path) -> Path:
    return root / f"Pulumi.{stack}.yaml"


def load_stack(stack: str, root: Path) -> Environment:
    """Read `Pulumi.<stack>.yaml` without the Pulumi CLI (plain values only; `secure:` values are skipped)."""
    path = stack_file(stack, root)
    if not path.is_file():
        raise SettingsError(str(path), [f"no stack file for stack {stack!r}: expected {path}"])
    try:
        document = YAML(typ="safe").load(path.read_text()) or {}
    except Exception as exc:  # ruamel raises many YAML error types
        raise SettingsError(str(path), [f"not valid YAML: {exc}"]) from None
    config = document.get("config") or {}
    if not isinstance(config, dict):
        raise SettingsError(str(path), ["`config:` must be a mapping of key: value"])
    return environment_from_config(config, stack=stack, source=str(path))
